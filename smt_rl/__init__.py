"""smt_rl: agents with memory trained without backpropagation through time.

The core package: trajectory storage and collection, step encoding, the teacher, memory cells,
the SMT/DMT losses and trainers. It depends on no other package of this project.
"""

__version__ = "0.1.0"

"""Neural modules: step encoding, the teacher (encoder + predictive decoder), memory cells."""

from smt_rl.models.cells import CELLS, GatedResidualCell, GRUMemoryCell, MemoryCell, TransformerCell
from smt_rl.models.step_encoder import SpaceEmbedding, StepEncoder
from smt_rl.models.teacher import PredictiveDecoder, TeacherEncoder

__all__ = [
    "CELLS",
    "GRUMemoryCell",
    "GatedResidualCell",
    "MemoryCell",
    "PredictiveDecoder",
    "SpaceEmbedding",
    "StepEncoder",
    "TeacherEncoder",
    "TransformerCell",
]

"""fastops on torch.distributed: DTensor sharding rules for every fastops op (tensor and sequence parallelism with
``parallelize_module``), vocabulary-parallel cross entropy, and the parallel style for the fused linear + cross
entropy head. FSDP2 (``fully_shard``) needs nothing from here: it hands the ops plain tensors.

``import fastops.distributed`` registers the rules (importing torch.distributed.tensor is too slow to do on every
``import fastops``). See docs/distributed.md.
"""

from . import _rules  # noqa: F401  (registers the sharding rules)
from ._styles import VocabParallel
from ._vocab_parallel import loss_parallel

__all__ = ["VocabParallel", "loss_parallel"]

"""What the trainer's test modules (test_trainer, test_checkpoint) share besides their fixtures
(which live in conftest.py: `one_torch_thread`, `cache_dir`, `corpus`)."""

from __future__ import annotations

VOLATILE = ("wall_time_s", "tokens_per_s", "peak_memory_mb", "time_s")  # clocks, not results
WORDS = ("the a quick brown fox jumps over lazy dog cat sat on mat and ran far away while birds "
         "sing songs of spring river stone tree under above light dark old new red blue").split()

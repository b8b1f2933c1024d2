"""MA-CNN end to end (the e2e preset: the object stream, the channel-grouping initialisation, then every loss in one
phase) learns the synthetic task and its maps find several parts. A file of its own, so that pytest-xdist runs it
beside the alternating schedule's learning test."""

import numpy as np
import pytest
from test_macnn_learning import map_peaks_on_parts, small

from configs import macnn as macnn_config
from fgattn_jax.training import loop

pytestmark = pytest.mark.slow  # a learning test (training runs to a threshold): `python -m pytest -m slow`


def test_macnn_end_to_end_maps_find_several_parts(tmp_path, optimized):
  """The e2e preset (object stream, channel-grouping initialisation, then every loss in one phase): its maps do not
  collapse on one part, as they all did when the run was one phase from scratch (1.00 distinct parts hit)."""
  c = small(macnn_config.get_config("e2e"))
  results = loop.run(c, str(tmp_path), progress=False)
  consistency, _, on, on_r, hit, hit_r = map_peaks_on_parts(c, tmp_path)
  print(
    f"e2e: joint top-1 {results['logits']['top1']:.3f}, object stream {results['object']['top1']:.3f}; "
    f"per-map consistency {np.round(consistency, 2)}; peaks on a part {on:.2f} vs {on_r:.2f}; distinct parts hit "
    f"per image {hit:.2f} vs {hit_r:.2f}"
  )
  assert hit > 1.3 and on > on_r + 0.3
  assert results["logits"]["top1"] > 0.3

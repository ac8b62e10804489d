"""EASE, the collaborative route of the recall lists and one of the evaluation's baselines.

- :mod:`.model`: the closed-form solves (Gram, Woodbury, capped to the most-interacted items)
  and :class:`~.model.EaseModel`, the fitted model that scores any history over its items;
- :mod:`.windowed`: the route's model, EASE plus a term for items taken up near each other in time;
- :mod:`.store`: the model as one ``.npz`` file in the home folder (``models/ease/ease.npz``),
  written by the ``ease_model`` asset and read by ``recall_candidates``, feedback refreshes and
  ad-hoc recall.
"""

"""UNICON (Dibak et al., 2023): transformer consumer embeddings from interaction
sequences, data-driven behaviour segments and lookalike audiences.

- :mod:`.data`: sequences as padded tensors, item attributes and customer features;
- :mod:`.model`: the causal transformer (tokens = item + attributes + event, CLS =
  customer features) and the class-attention head for lookalike classification;
- :mod:`.train`: :class:`NextItemModel` (next-item training, embeddings) and
  :class:`LookalikeClassifier` (core vs non-core fine-tuning);
- :mod:`.segments`: k-means on cosine embeddings, K selection, representative items,
  the attribute similarity of the paper's eq. (2);
- :mod:`.lookalike`: thresholds by F-beta, audience metrics and the baselines;
- :mod:`.metrics`: next-item ranking metrics;
- :mod:`.synthetic`: a generator with planted behavioural segments and a latent affinity;
- :mod:`.figures`: the paper's Figures 2 and 4 and the training curve.
"""

"""Analyses of trained models (``tools/analyze_ideal_repr.py``).

* :mod:`.ideal_repr`: ideal class representation mining (OffSeg, Sec. 3.2):
  pseudo-inverse solve, reconstruction, cosine similarity across images;
  NumPy only.
* :mod:`.features`: the final pixel features of each supported decode head
  (imports the models, hence Jittor: import :mod:`jseg` first).
"""
from .ideal_repr import (IdealReprAnalysis, cosine_similarity_matrix, ideal_class_representations,
                         labels_at_feature_resolution, mean_off_diagonal, one_hot_masks, reconstruct,
                         reconstruct_labels)

__all__ = ['IdealReprAnalysis', 'cosine_similarity_matrix', 'ideal_class_representations',
           'labels_at_feature_resolution', 'mean_off_diagonal', 'one_hot_masks', 'reconstruct',
           'reconstruct_labels']

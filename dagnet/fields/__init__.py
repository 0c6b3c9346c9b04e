"""Stochastic nodes: CRFs and latent-variable models with exact or stated-approximate message passing.

Each is an ``nn.Module`` that owns its pairwise parameters and takes potentials
from a network; each offers ``log_partition``, ``marginals``, ``decode``,
``nll`` and, where exact sampling is possible, ``sample``. ``DenseCRF`` is a
trainable mean-field layer returning refined log-marginals.
"""

from dagnet.fields.chain import ChainCRF, Constraints, bio_constraints
from dagnet.fields.dense_crf import DenseCRF
from dagnet.fields.grid import GridCRF
from dagnet.fields.latent import HiddenCRF, LatentDynamicCRF
from dagnet.fields.tree import TreeCRF

__all__ = ["ChainCRF", "Constraints", "DenseCRF", "GridCRF", "HiddenCRF", "LatentDynamicCRF", "TreeCRF",
           "bio_constraints"]

"""Structured nodes: CRFs and latent-variable models behind one protocol.

Every node is a :class:`~dagnet.fields.protocol.Field` and answers
``log_partition``, ``marginals``, ``decode`` -> ``(labels, score)``, ``kbest``,
``sample``, ``entropy``, ``score`` and ``nll`` with the same types and mask
conventions, exactly (chain, tree, semi-Markov, dependency, CKY, hidden CRFs: one semiring dynamic program
each, :mod:`dagnet.fields.semiring`) or with a stated approximation (grid,
dense; some latent-dynamic queries). docs/fields.md has the table.
"""

from dagnet.fields.chain import ChainCRF, Constraints, bio_constraints
from dagnet.fields.cky import CKYCRF
from dagnet.fields.dense_crf import DenseCRF
from dagnet.fields.dependency import DependencyCRF
from dagnet.fields.grid import GridCRF
from dagnet.fields.latent import HiddenCRF, LatentDynamicCRF
from dagnet.fields.protocol import Field, UnsupportedQuery
from dagnet.fields.semi_markov import SemiMarkovCRF
from dagnet.fields.tree import TreeCRF

__all__ = ["CKYCRF", "ChainCRF", "Constraints", "DenseCRF", "DependencyCRF", "Field", "GridCRF", "HiddenCRF",
           "LatentDynamicCRF", "SemiMarkovCRF", "TreeCRF", "UnsupportedQuery", "bio_constraints"]

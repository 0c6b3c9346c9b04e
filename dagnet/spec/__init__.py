"""Spec front ends: text in, :class:`~dagnet.spec.model.Spec` out."""

from dagnet.spec.frontends import load_spec, spec_format
from dagnet.spec.model import BlockSpec, InputSpec, NodeSpec, Ref, Spec
from dagnet.spec.yaml_loader import load_yaml_spec

__all__ = ["BlockSpec", "InputSpec", "NodeSpec", "Ref", "Spec", "load_spec", "load_yaml_spec", "spec_format"]

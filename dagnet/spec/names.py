"""The one naming rule for every name a spec defines, enforced before expansion.

Names become Python identifiers, ``nn.Module`` attribute names and
``state_dict`` keys in the emitted module, so a name is data only if it can be
nothing else: an ASCII identifier (``[A-Za-z_][A-Za-z0-9_]*``), without a
leading ``__``, and not a Python keyword. Node and input names become the
module's attributes and ``forward``'s arguments, so they are also not
attributes of ``nn.Module`` or ``torch.fx.GraphModule`` (a node named
``forward`` or ``training`` would replace the module's own); parameter and
block names never reach the module and may be ``half`` or ``type``. Checking
here, at the front door, means no later stage ever meets a name that needs
escaping; the emitter checks again all the same.

The reserved attributes are written out rather than read from torch, so that
checking a spec never imports it; tests/test_names.py holds the list equal to
what the installed torch defines.
"""

from __future__ import annotations

import keyword
import re
import unicodedata

from dagnet.errors import ErrorLog, Loc
from dagnet.spec.model import NodeSpec, Spec

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 128

# attributes of nn.Module and torch.fx.GraphModule instances (torch 2.3 - 2.13), and the
# emitter's own: a node under one of these names would shadow or break the module
MODULE_ATTRIBUTES = frozenset("""
    T_destination add_module add_submodule apply bfloat16 buffers call_super_init children code
    compile cpu cuda delete_all_unused_submodules delete_submodule double dump_patches eval
    extra_repr float forward get_buffer get_extra_state get_parameter get_submodule graph half ipu
    load_state_dict meta modules mtia named_buffers named_children named_modules named_parameters
    parameters print_readable recompile register_backward_hook register_buffer
    register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
    set_submodule shape_env share_memory state_dict to to_empty to_folder train training type
    xpu zero_grad
    _apply _backward_hooks _backward_pre_hooks _boxed_call _buffers _call_impl _code
    _compiled_call_impl _create_node_hooks _deepcopy_hooks _deepcopy_init _erase_node_hooks
    _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks
    _forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_name _graph
    _is_full_backward_hook _lineno_map _load_from_state_dict _load_state_dict_post_hooks
    _load_state_dict_pre_hooks _maybe_warn_non_full_backward_hook _modules _named_members
    _non_persistent_buffers_set _parameters _prologue_start _recompile_submodules
    _register_create_node_hook _register_deepcopy_hook _register_erase_node_hook
    _register_load_state_dict_pre_hook _register_replace_node_hook _register_state_dict_hook
    _replace_hooks _replicate_for_data_parallel _save_to_state_dict _set_replace_hook
    _slow_forward _state_dict_hooks _state_dict_pre_hooks _tracer_cls _tracer_extras
    _unregister_create_node_hook _unregister_deepcopy_hook _unregister_erase_node_hook
    _unregister_replace_node_hook _version _wrapped_call _wrapped_call_impl
    dagnet_ir self
""".split())


def name_problem(name, attribute: bool = True) -> str | None:
    """Why ``name`` cannot name anything in a spec, or None when it can.

    ``attribute``: the name becomes a module attribute (a node or an input).
    """
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a name"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long (at most {MAX_NAME})"
    if "." in name:
        return "contains a dot (dots separate block paths)"
    if not NAME.fullmatch(name):
        return "is not an ASCII identifier (letters, digits and `_`, not starting with a digit)"
    if name.startswith("__"):
        return "starts with `__` (reserved for Python's own names)"
    if keyword.iskeyword(name):
        return "is a Python keyword"
    if attribute and name in MODULE_ATTRIBUTES:
        return "is an attribute of every PyTorch module"
    return None


def legal_name(name) -> str:
    """The closest name the rule accepts: ``a²`` -> ``a2``, ``3d-unet`` -> ``n3d_unet``, ``forward`` -> ``forward_``."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9_]+", "_", text)[:MAX_NAME - 2].strip("_") or "node"
    if text[0].isdigit():
        text = "n" + text
    if keyword.iskeyword(text) or text in MODULE_ATTRIBUTES:
        text += "_"
    return text


def _check(name, loc: Loc, what: str, errors: ErrorLog, attribute: bool = True) -> None:
    problem = name_problem(name, attribute)
    if problem:
        shown = repr(name) if not isinstance(name, str) or not name.isprintable() else f"`{name}`"
        errors.add(f"{what} {shown} {problem}", loc, f"rename it, e.g. `{legal_name(name)}`")


def check_names(spec: Spec, errors: ErrorLog) -> None:
    """Log a located error for every name in ``spec`` that breaks the naming rule."""
    for name, loc in spec.param_locs.items():
        _check(name, loc, "parameter", errors, attribute=False)
    for name, inp in spec.inputs.items():
        _check(name, inp.loc, "input", errors)
    _check_nodes(spec.nodes, errors)   # outputs and `in:` name nodes and inputs: checked there
    for name, block in spec.blocks.items():
        _check(name, block.loc, "block", errors, attribute=False)
        for param, loc in block.param_locs.items():
            _check(param, loc, f"block `{name}`'s parameter", errors, attribute=False)
        for inp in block.inputs:        # the block's own name for what a use passes in
            _check(inp, block.loc, f"block `{name}`'s input", errors, attribute=False)
        _check_nodes(block.nodes, errors)


def _check_nodes(nodes: dict[str, NodeSpec], errors: ErrorLog) -> None:
    for name, node in nodes.items():     # `seq` items are numbered by the front end, not named
        _check(name, node.loc, "node", errors)

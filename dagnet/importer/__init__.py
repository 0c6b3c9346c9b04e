"""``dagnet import``: an existing model becomes a short, editable spec.

The pipeline, one direction like the compiler's::

    nn.Module / "pkg.mod:factory" ┐
    .onnx   ──onnx_front──▶ nn.Module ┤──capture──▶ flat graph ──fold──▶ spec text + state dict
    .prototxt ──caffe_front──▶ nn.Module ┘                 (module paths = blocks)

Every front end hands the capture stage an ``nn.Module`` whose submodule paths
are the source's hierarchy (torchvision's ``layer1.0.conv1``, an ONNX
exporter's namespaces, a Caffe net's flat layer names), so capturing,
folding, writing and verifying are written once. An op no front can map is an
:class:`~dagnet.importer.opaque.Unsupported` leaf, never an abort.
"""

from dagnet.importer.write import flat_spec as folded_spec  # noqa: F401

import ase_flatten


def test_public_api_resolves():
    for name in ase_flatten.__all__:
        assert getattr(ase_flatten, name) is not None
    assert ase_flatten.cluster_errors.__module__ == "ase_flatten.error_analysis"
    assert issubclass(ase_flatten.InputError, ValueError)
    # the saved model reads and writes its directory; the old names stay
    assert ase_flatten.load_model == ase_flatten.SavedModel.load
    assert ase_flatten.save_model == ase_flatten.SavedModel.save

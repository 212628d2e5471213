import ase_flatten


def test_public_api_resolves():
    for name in ase_flatten.__all__:
        assert getattr(ase_flatten, name) is not None
    assert ase_flatten.cluster_errors.__module__ == "ase_flatten.error_analysis"
    assert issubclass(ase_flatten.InputError, ValueError)

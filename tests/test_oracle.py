"""The labelling oracle: real GFN2-xTB labels, the store, failures and reuse."""

import json

import numpy as np
import pytest

from ase_flatten.exceptions import InputError
from ase_flatten.oracle import (
    LabelStore,
    Oracle,
    frame_keys,
    label_frames,
    probe_oracle,
)

GFN2 = Oracle("tests.oracle_factories:gfn2")


def _frames(dataset, n=6, start=0):
    return dataset.positions[start : start + n]


def test_keys_follow_content_not_source(xtb_dataset, tmp_path):
    from ase_flatten.data import read_dataset

    positions = _frames(xtb_dataset)
    keys = frame_keys(xtb_dataset.numbers, positions)
    assert len(set(keys)) == len(keys)
    # the same frames written and read again (another file) keep their keys
    xtb_dataset.write(tmp_path / "copy.extxyz", np.arange(6))
    again = read_dataset(str(tmp_path / "copy.extxyz")).positions
    assert frame_keys(xtb_dataset.numbers, again) == keys
    xtb_dataset.write(tmp_path / "twice.extxyz", np.arange(6))
    twice = read_dataset(str(tmp_path / "twice.extxyz")).positions
    assert frame_keys(xtb_dataset.numbers, twice) == keys
    moved = positions.copy()
    moved[0, 0, 0] += 1e-4
    assert frame_keys(xtb_dataset.numbers, moved)[0] != keys[0]


def test_labels_are_gfn2_and_never_paid_twice(xtb_dataset, tmp_path):
    positions = _frames(xtb_dataset)
    store = LabelStore(tmp_path / "labels.jsonl")
    energies, forces, ok, stats = label_frames(
        xtb_dataset.numbers, positions, GFN2, store, progress=False
    )
    assert ok.all() and stats.calls == 6 and stats.reused == 0
    # the dataset was labelled with the same GFN2-xTB
    np.testing.assert_allclose(energies, xtb_dataset.energies[:6], atol=1e-4)
    np.testing.assert_allclose(forces, xtb_dataset.forces[:6], atol=1e-3)
    # a new store on the same file (a resumed run) pays for none of them again
    reread = LabelStore(tmp_path / "labels.jsonl")
    again = label_frames(
        xtb_dataset.numbers, _frames(xtb_dataset, 8), GFN2, reread, progress=False
    )
    assert again[3].reused == 6 and again[3].calls == 2
    np.testing.assert_array_equal(again[0][:6], energies)
    lines = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert len(lines) == 8 == len({json.loads(line)["key"] for line in lines})


@pytest.mark.slow
def test_worker_processes_give_the_same_labels(xtb_dataset, tmp_path):
    positions = _frames(xtb_dataset, 5)
    serial = label_frames(
        xtb_dataset.numbers, positions, GFN2, LabelStore(tmp_path / "a"), jobs=1
    )
    parallel = label_frames(
        xtb_dataset.numbers, positions, GFN2, LabelStore(tmp_path / "b"), jobs=2
    )
    assert parallel[3].calls == 5
    # the same numbers up to the last digits (another process: 1e-13 measured)
    np.testing.assert_allclose(serial[0], parallel[0], rtol=1e-12)
    np.testing.assert_allclose(serial[1], parallel[1], rtol=0, atol=1e-9)
    # and a second run with workers gives the labels of the first bit for bit
    again = label_frames(
        xtb_dataset.numbers, positions, GFN2, LabelStore(tmp_path / "c"), jobs=2
    )
    np.testing.assert_array_equal(again[0], parallel[0])
    np.testing.assert_array_equal(again[1], parallel[1])


@pytest.mark.parametrize(
    "how, reason",
    [
        ("nan", "not finite"),
        ("shape", "forces of shape (8, 3)"),
        ("raise", "RuntimeError: SCF not converged"),
        ("hang", "no result within 0.5 s"),
    ],
)
def test_a_failed_frame_is_recorded_and_skipped(xtb_dataset, tmp_path, how, reason):
    positions = _frames(xtb_dataset, 6)
    cut = np.sort(positions[:, 0, 0])[-2]  # the last frame by x fails, others fine
    oracle = Oracle(
        "tests.oracle_factories:broken",
        {"how": how, "cut": float(cut)},
        timeout_s=0.5,
        max_failure_share=0.5,
    )
    store = LabelStore(tmp_path / "labels.jsonl")
    energies, _, ok, stats = label_frames(
        xtb_dataset.numbers, positions, oracle, store, progress=False
    )
    bad = positions[:, 0, 0] > cut
    assert bad.sum() == 1 and stats.failed == 1
    np.testing.assert_array_equal(ok, ~bad)
    assert np.isnan(energies[bad]).all()
    record = store.get(frame_keys(xtb_dataset.numbers, positions[bad])[0])
    assert reason in record["error"]
    # a failure was paid for too: a resumed run does not try it again
    again = label_frames(
        xtb_dataset.numbers, positions, oracle, LabelStore(store.path), progress=False
    )
    assert again[3].calls == 0


def test_a_slow_call_off_the_main_thread_is_a_failure(xtb_dataset, tmp_path):
    """Dask runs tasks in threads, which SIGALRM cannot reach: there a call is
    timed when it returns, and one over the timeout is recorded as a failure."""
    import threading

    positions = _frames(xtb_dataset, 2)
    oracle = Oracle(
        "tests.oracle_factories:broken",
        {"how": "none", "sleep_s": 0.4},
        timeout_s=0.2,
        max_failure_share=1.0,
    )
    store = LabelStore(tmp_path / "labels.jsonl")
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            out=label_frames(
                xtb_dataset.numbers, positions, oracle, store, progress=False
            )
        )
    )
    thread.start()
    thread.join(30)
    _, _, ok, stats = result["out"]
    assert not ok.any() and stats.failed == 2
    record = store.get(frame_keys(xtb_dataset.numbers, positions[:1])[0])
    assert "no result within 0.2 s (took 0.4 s)" in record["error"]


def test_too_many_failures_stop_with_one_line(xtb_dataset, tmp_path):
    oracle = Oracle("tests.oracle_factories:broken", {"how": "raise"})
    with pytest.raises(InputError) as error:
        label_frames(
            xtb_dataset.numbers,
            _frames(xtb_dataset, 10),
            oracle,
            LabelStore(tmp_path / "labels.jsonl"),
            progress=False,
        )
    message = str(error.value)
    assert message.startswith("oracle tests.oracle_factories:broken: 5 of 5 frames")
    assert "SCF not converged" in message and "\n" not in message


@pytest.mark.parametrize(
    "spec, kwargs, text",
    [
        ("nope.module:Calc", {}, "cannot import calculator factory"),
        ("tests.oracle_factories:not_a_calculator", {}, "not an ASE calculator"),
        ("tests.oracle_factories:gfn2", {"colour": 1}, "unexpected keyword"),
        ("tests.oracle_factories:broken", {"how": "nan"}, "not finite"),
    ],
)
def test_a_bad_oracle_fails_before_any_work(xtb_dataset, spec, kwargs, text):
    with pytest.raises(InputError, match=text):
        probe_oracle(Oracle(spec, kwargs), xtb_dataset)


def test_probe_warns_when_the_oracle_is_another_method(xtb_dataset, caplog):
    same = probe_oracle(GFN2, xtb_dataset, 3)
    assert same["force_rmse"] < 1e-3 and abs(same["energy_difference"]) < 1e-4
    other = Oracle("tblite.ase:TBLite", {"method": "GFN1-xTB", "verbosity": 0})
    check = probe_oracle(other, xtb_dataset, 3)
    assert check["force_rmse"] > 0.05
    assert "is it the method that labelled the data?" in caplog.text


def test_store_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"key": "a", "energy": 1.0, "forces": []}\n{"key": "b", "ene')
    store = LabelStore(path)
    assert "a" in store and "b" not in store and len(store) == 1
    store.add({"key": "c", "energy": 2.0, "forces": []})
    store.close()
    assert {"a", "c"} <= {k for k in LabelStore(path)._records}
    path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(InputError, match="line 2 is not a label record"):
        LabelStore(path)


def test_oracle_settings_are_checked():
    with pytest.raises(InputError, match="timeout"):
        Oracle("tblite.ase:TBLite", timeout_s=float("nan"))
    with pytest.raises(InputError, match="failure share"):
        Oracle("tblite.ase:TBLite", max_failure_share=2.0)
    with pytest.raises(InputError, match="JSON object"):
        Oracle("tblite.ase:TBLite", kwargs=[1])

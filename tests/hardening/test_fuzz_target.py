"""The coverage-guided fuzz target (fuzz/fuzz_middleware.py), run in CI without libFuzzer.

CI replays the seed corpus and hypothesis-made byte strings through the
target's ``TestOneInput``; with ``AUTHMW_LONG_TESTS=1`` atheris (libFuzzer)
also mutates from the corpus for a bounded time.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ._support import FUZZ, LONG

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "fuzz" / "fuzz_middleware.py"
CORPUS = REPO / "fuzz" / "corpus" / "middleware"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_middleware", TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


target = _load()


def test_corpus_holds_the_seeds_and_every_input_passes() -> None:
    files = sorted(CORPUS.iterdir())
    contents = [f.read_bytes() for f in files]
    for seed in target.seeds():
        assert seed in contents, (
            "regenerate: python fuzz/fuzz_middleware.py --write-seeds fuzz/corpus/middleware"
        )
    for data in contents:
        target.TestOneInput(data)


def test_seeds_decode_to_the_attacks_they_stand_for() -> None:
    cases = [target.decode(seed) for seed in target.seeds()]
    assert cases[0].path == "/healthz/../admin"
    assert cases[0].headers == [(b"X-Roles", b"FORGEDadmin")]
    assert cases[1].headers == [(b"openstack_system_scope", b"FORGEDall")]
    assert cases[2].path == "/healthz%2f..%2fadmin"
    assert cases[5].headers[0][1] != cases[5].headers[1][1]  # two different tokens


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_through_the_fuzz_target(data: bytes) -> None:
    target.TestOneInput(data)


@pytest.mark.parametrize("data", [b"a", b"\x00", b"\xff"])
def test_the_target_detects_a_forged_header_reaching_the_app(data: bytes) -> None:
    # The target's oracle must be able to fail: break stripping, expect an error.
    import authmw.headers as h

    saved = h.STRIPPED_ENVIRON_KEYS
    h.STRIPPED_ENVIRON_KEYS = ()
    try:
        roles = target.STRIPPED.index("X-Roles")
        case = target.encode(0, 0, (1, 2), [(100, 0, 0), (0, roles, 0, 80, 1, data[0])])
        with pytest.raises(AssertionError):
            target.TestOneInput(case)
    finally:
        h.STRIPPED_ENVIRON_KEYS = saved


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="libFuzzer run: opt-in with AUTHMW_LONG_TESTS=1")
def test_libfuzzer_run(tmp_path: Path) -> None:
    for seed in CORPUS.iterdir():
        (tmp_path / seed.name).write_bytes(seed.read_bytes())
    seconds = os.environ.get("AUTHMW_FUZZ_SECONDS", "300")
    proc = subprocess.run(
        [sys.executable, str(TARGET), f"-max_total_time={seconds}", "-timeout=20", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]

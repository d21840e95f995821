"""The README's examples run, and say what the README says they say."""
import re
from pathlib import Path

import pytest

import pymm

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_the_first_two_lines_are_the_install_commands():
    first = blocks("sh")[0].splitlines()
    assert "pip install -e . && pymm bench" in first[0]
    assert 'pip install -e ".[test]" && python -m pytest -q' in first[1]


def test_first_session_block():
    code = blocks("python")[0]
    ns = {}
    exec(compile(code, "README first session", "exec"), ns)
    mm, b = ns["mm"], ns["b"]
    assert mm.read(b + 12345, 2) == b"ZZ" and mm.stats["pmd_moves"] == 512
    assert len(mm.pagemap(b, 4096)) == 1


def test_own_kernel_block():
    code = blocks("python")[1]
    ns = {}
    exec(compile(code, "README own kernel", "exec"), ns)
    r = ns["r"]
    assert (r.orphans, r.data_intact) == ([0x140000000], False)


def test_walk_trace_in_the_readme_is_what_pymm_prints():
    st = pymm.scenarios.stack_shift_stage("5.8")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.act()
    trace = str(st.mm.walk(0x7fffffa01234))
    assert trace in README.read_text()


def test_first_session_runs_on_the_host_kernel_too():
    """The README's claim: the session runs on HostMM, but for the line
    marked "(pymm only)"."""
    if not pymm.host.available():
        pytest.skip(f"HostMM: {pymm.host.unavailable_reason()}")
    code = blocks("python")[0]
    assert 'pymm.MM(kernel="6.18")' in code
    code = "\n".join(line for line in code.splitlines() if "(pymm only)" not in line)
    ns = {}
    with pymm.host.HostMM() as h:
        exec(compile(code.replace('pymm.MM(kernel="6.18")', "h"), "README on HostMM", "exec"),
             dict(ns, h=h))
        lo, hi = pymm.HOST_WINDOW
        assert any(v.start == lo + (1 << 40) for v in h.maps())
        with pytest.raises(TypeError, match="needs a pymm.MM"):
            pymm.check(h)


def test_python_outputs_in_comments_are_what_python_prints():
    text = README.read_text()
    assert "# ([5368709120], False)" in text and "[0x140000000], False)" not in text

"""pymm bench's pieces: the cost model fit and the path column."""
import pytest

from pymm.bench import Row, fit_cost_model, twenty_x


def row(pte=0, pmd=0, pud=0, host=()):
    return Row("case", "6.18", 0, {"pte_moves": pte, "pmd_moves": pmd, "pud_moves": pud,
                                   "huge_pmd_moves": 0}, [1000], list(host))


PATHS = [(262144, 0, 0), (0, 512, 0), (0, 0, 1), (16384, 0, 0), (0, 32, 0), (65536, 0, 0)]


def test_cost_model_recovers_known_costs():
    rows = [row(p, m, u, [40_000 + 12 * p + 400 * m + 1_000 * u]) for p, m, u in PATHS]
    model = fit_cost_model(rows)
    assert model.points == 6
    assert (round(model.a), round(model.b, 3), round(model.c), round(model.d)) == (40_000, 12.0, 400, 1_000)
    assert model.predict({"pte_moves": 1000, "pmd_moves": 0, "pud_moves": 0, "huge_pmd_moves": 0}) \
        == pytest.approx(52_000)


def test_cost_model_never_reports_a_negative_cost():
    # a PUD move cheaper than the fixed cost: the PUD term goes, the rest is refitted
    rows = [row(p, m, u, [40_000 + 12 * p + 400 * m - 10_000 * u]) for p, m, u in PATHS]
    model = fit_cost_model(rows)
    assert min(model.a, model.b, model.c, model.d) >= 0 and model.d == 0
    assert model.b == pytest.approx(12, rel=0.05)


def test_cost_model_needs_enough_runs():
    assert fit_cost_model([row(1, 0, 0, [5])]) is None


def test_path_text_and_twenty_x_lines():
    assert row(0, 512, 0).path_text() == "512 PMDs" and row(1, 0, 1).path_text() == "1 PUD + 1 PTE"
    rows = {"per-PTE": row(262144, host=[3_000_000]), "PMD-aligned": row(0, 512, host=[200_000]),
            "PUD-aligned": row(0, 0, 1, host=[30_000])}
    rows["per-PTE"].pymm_ns = [300_000]
    rows["PMD-aligned"].pymm_ns = [10_000]
    lines = twenty_x(rows)
    assert "= 30.0x" in lines[0] and "= 15.0x, then 6.7x" in lines[1]


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch):
    import sys
    from pymm.bench import plot_sizes
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    msg = plot_sizes("/nonexistent/x.png", reps=1, host=False, sizes=(1 << 20,))
    assert "pip install 'pymm[plot]'" in msg and "no plot written" in msg


def test_cost_model_reports_its_fit_quality():
    exact = [row(p, m, u, [40_000 + 12 * p + 400 * m + 1_000 * u]) for p, m, u in PATHS]
    model = fit_cost_model(exact)
    assert model.r2 == pytest.approx(1.0) and model.rel_err == pytest.approx(0.0, abs=1e-9)
    noisy = [row(p, m, u, [(40_000 + 12 * p + 400 * m) * (1.5 if i % 2 else 0.7)])
             for i, (p, m, u) in enumerate(PATHS)]
    bad = fit_cost_model(noisy)
    assert bad.r2 < 0.999 and bad.rel_err > 0.1
    assert "R^2" in str(bad)


def test_spread_min_median_iqr():
    from pymm.bench import spread
    assert spread([]) is None
    assert spread([7]) == {"min": 7, "median": 7, "iqr": 0.0}
    assert spread([40, 10, 30, 20, 50]) == {"min": 10, "median": 30, "iqr": 20.0}


def test_machine_names_cpu_kernel_and_thp():
    import platform
    from pymm.bench import machine, machine_text
    m = machine()
    assert m["kernel"].endswith(platform.release()) and m["cpu"] and m["thp"]
    assert m["thp"] in machine_text(m) and platform.release() in machine_text(m)


def test_copy_limit_is_measured():
    from pymm.bench import copy_limit_ns
    assert copy_limit_ns(8 << 20) > 0


def test_small_run_without_host_warm_and_cold(tmp_path):
    import io
    import json
    from pymm.bench import run
    for warm in (True, False):
        out = io.StringIO()
        path = tmp_path / f"b{warm}.json"
        assert run(size=8 << 20, reps=2, host=False, out=out, json_path=str(path), warm=warm) == 0
        text = out.getvalue()
        assert ("--cold" in text) != warm and "machine: " in text and "copy limit" in text
        doc = json.loads(path.read_text())
        assert doc["warm_call"] is warm and doc["copy_limit"]["median"] > 0
        pte = next(r for r in doc["rows"] if r["case"] == "per-PTE")
        assert pte["path"]["pte_moves"] == 2048 and len(pte["pymm_ns"]) == 2
        assert set(pte["pymm"]) == {"min", "median", "iqr"}

"""The report drivers of reports/ (above the library): the lensing comparison collected from run folders as
``python -m reports.lensing.compare`` finds them, its mean ± sample std per experiment against numpy and the
best PSNR in bold."""

from __future__ import annotations

import numpy as np

from reports.lensing.compare import comparison_table, find_runs


def _run(folder, experiment: str, seed: int, psnr: float, finished: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "config_resolved.yaml").write_text(f"experiment_name: {experiment}\nseed: {seed}\n")
    test = f"{psnr},28.0,27.5" if finished else ",,"
    (folder / "metrics.csv").write_text(
        f"epoch,val/psnr,test/psnr,test/bicubic_psnr,test/bilinear_psnr\n0,1.0,{test}\n"
    )


def test_lensing_comparison_averages_seeds_per_experiment_and_bolds_the_best(tmp_path):
    _run(tmp_path / "0", "lensing_rdn", 0, 30.0)
    _run(tmp_path / "1", "lensing_rdn", 1, 31.25)
    _run(tmp_path / "2", "lensing_srgan", 0, 29.0)
    _run(tmp_path / "3", "lensing_esrgan", 0, 0.0, finished=False)  # still training: no test/ metrics, left out
    runs = find_runs(tmp_path)
    assert sorted((r["experiment"], r["seed"]) for r in runs) == [
        ("lensing_rdn", 0),
        ("lensing_rdn", 1),
        ("lensing_srgan", 0),
    ]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in comparison_table(runs).splitlines()}
    mean, std = np.mean([30.0, 31.25]), np.std([30.0, 31.25], ddof=1)
    assert rows["RDN"][1] == f"**{mean:.2f} ± {std:.2f}**"  # the best PSNR of the column, bold
    assert rows["RDN"][2] == f"{mean - 28.0:.2f} ± {std:.2f}"  # gain over bicubic
    assert rows["SRGAN"][1] == "29.00" and rows["SRGAN"][-1].strip(" |") == "1"  # one run: the value, no spread
    assert rows["bicubic"][1] == "28.00 ± 0.00" and rows["bicubic"][-1].strip(" |") == "3"  # baselines: every run


def test_galaxy_ablation_averages_the_seeds_of_a_recipe_and_finds_the_worst_ratio(tmp_path):
    from reports.galaxy.ablation import ablation_table

    def run(name: str, ratios: dict[str, float], seconds: float):
        d = tmp_path / name
        d.mkdir()
        keys = ["time/fit_seconds", *(f"test/{k}" for k in ratios)]
        rows = [f"{seconds},{','.join('' for _ in ratios)}", f",{','.join(str(v) for v in ratios.values())}"]
        (d / "metrics.csv").write_text(",".join(keys) + "\n" + "\n".join(rows) + "\n")
        return d

    base = {"w1_ratio/flux": 2.0, "w1_ratio/hlr": 4.0, "w1_ratio/e": 1.0, "w1_ratio/C": 1.0, "w1_ratio/A": 1.0}
    a = run("a", {**base, "fd_ratio": 3.0}, 120.0)
    b = run("b", {**base, "w1_ratio/hlr": 8.0, "fd_ratio": 5.0}, 240.0)
    table = ablation_table({"recipe": [a, b]})
    row = table.splitlines()[-1]
    assert row.startswith("| recipe | 2 | 2.00 ± 0.00 | 6.00 ± 2.83 |")  # hlr: mean and sample std of 4 and 8
    assert "| 4.00 ± 1.41 | 6.00 ± 2.83 | 3.0 ± 1.4 |" in row  # FD ratio, worst W1, minutes

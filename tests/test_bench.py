"""`liif bench` library: LR discovery, the quality and speed runs, JSON, tables, bad input."""

import io
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from liif_cli import bench, checkpoint
from liif_cli.bench import command, options, quality, report, speed
from liif_cli.bench import sets as bench_sets
from liif_cli.errors import LiifError
from liif_cli.model import ModelSpec, build_model

TINY = ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16])

COMMON_KEYS = {"schema_version", "kind", "timestamp", "liif_version", "torch_version", "device",
               "device_name", "threads", "weights_name", "weights_sha256", "model_spec",
               "engine_options", "protocol", "warnings"}
QUALITY_KEYS = COMMON_KEYS | {"data_root", "sets", "scales", "degrade", "results"}
QUALITY_ENTRY_KEYS = {"set", "scale", "shave", "n_images", "lr_source", "lr_folder", "model",
                      "bicubic", "lanczos", "gain_psnr", "images"}
QUALITY_IMAGE_KEYS = {"image", "hr_size", "lr_size", "lr_source", "render_seconds", "model",
                      "bicubic", "lanczos"}
SPEED_KEYS = COMMON_KEYS | {"input_size", "scales", "repeats", "warmup", "max_output_mp",
                            "peak_memory_method", "timer", "results"}
SPEED_ENTRY_KEYS = {"scale", "output_size", "rows", "region_mp", "engine", "reference",
                    "speedup", "max_abs_diff"}
TIMING_KEYS = {"seconds", "median_seconds", "mp_per_s", "peak_memory_mb"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY).eval()


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish uint8 RGB test image."""
    img = speed.synthetic_image((h, w), seed)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def data(tmp_path):
    """root/Tiny/HR/{a,b}.png (40x40, 36x44) with ready-made x2 LR files, none for x3."""
    root = tmp_path / "data"
    hr_dir = root / "Tiny" / "HR"
    sizes = {"a": (40, 40), "b": (36, 44)}
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        hr = _image(h, w, i)
        _save(hr, hr_dir / f"{stem}.png")
        lr = np.asarray(Image.fromarray(hr).resize((w // 2, h // 2), Image.Resampling.BOX))
        _save(lr, root / "Tiny" / "LR_bicubic" / "X2" / f"{stem}x2.png")
    return root


def score(sets, scales, root, model, *, save_images=None, overwrite=False, degrade=None,
          **kwargs):
    """plan_quality, then run_quality: the quality benchmark as `liif bench` runs it."""
    plan = bench_sets.plan_quality(sets, scales, root, save_images=save_images,
                                   overwrite=overwrite, degrade=degrade)
    return quality.run_quality(plan, model, **kwargs)


# ------------------------------------------------------------------ option parsing


def test_parse_options():
    assert options.parse_sets("Set5, Set14,,Set5") == ["Set5", "Set14"]
    assert options.parse_sets(None) == ["Set5", "Set14"]
    assert options.parse_scales("2,x3, 12.5,2") == [2.0, 3.0, 12.5]
    assert options.parse_scales(None, (4, 12.5)) == [4.0, 12.5]
    assert options.speed_input_size("640x480") == (480, 640)
    assert options.speed_input_size((48, 64)) == (48, 64)
    assert options.speed_input_size(None) == options.DEFAULT_SPEED_SIZE
    assert options.format_scale(2.0) == "2" and options.format_scale(12.5) == "12.5"
    for bad in ("two", "0", "-3", "nan", ","):
        with pytest.raises(LiifError):
            options.parse_scales(bad)
    for bad in ("512y512", "0x4", "", "64", (0, 4), "2147483647x1"):
        with pytest.raises(LiifError):
            options.speed_input_size(bad)
    with pytest.raises(LiifError):
        options.parse_sets(" , ")
    # Set folders are found case-insensitively and tables name scales as they print: a set
    # or scale named twice that way counts once.
    assert options.parse_sets("Tiny,tiny,TINY, Set5") == ["Tiny", "Set5"]
    assert options.parse_scales("2,2.0000001,3") == [2.0, 3.0]
    with pytest.raises(LiifError, match="thread counts must be 1 to 1024"):
        options.parse_threads("10000000000")


# ------------------------------------------------------------------ discovery


def test_lr_discovery(data):
    set_dir = data / "Tiny"
    assert bench_sets.find_lr_file(set_dir, "a", 2) == set_dir / "LR_bicubic" / "X2" / "ax2.png"
    assert bench_sets.find_lr_file(set_dir, "a", 3) is None  # no X3 folder: made from HR
    assert bench_sets.find_lr_file(set_dir, "a", 2.5) is None  # fractional: always made from HR

    pair = bench_sets.make_pair(set_dir / "HR" / "b.png", set_dir, 2)
    assert pair.lr_source == bench_sets.LR_FILE_SOURCE and pair.lr.shape == (18, 22, 3)
    assert pair.hr.shape == (36, 44, 3)
    pair = bench_sets.make_pair(set_dir / "HR" / "b.png", set_dir, 3)
    assert pair.lr_source == bench_sets.LR_PIL_SOURCE
    assert pair.lr.shape == (12, 14, 3) and pair.hr.shape == (36, 42, 3)  # 44 cropped to 42
    # Fractional scale: lr = floor(H / s), HR cropped to round(lr * s).
    pair = bench_sets.make_pair(set_dir / "HR" / "b.png", set_dir, 2.5)
    assert pair.lr.shape == (14, 17, 3) and pair.hr.shape == (35, 43, 3)  # 42.5 -> 43
    # The crop is the top-left of the HR image.
    full = bench_sets.load_rgb_u8(set_dir / "HR" / "b.png")
    assert np.array_equal(pair.hr, full[:35, :43])


def test_lr_folder_without_this_image_is_an_error(data):
    (data / "Tiny" / "LR_bicubic" / "X2" / "bx2.png").unlink()
    with pytest.raises(LiifError, match="bx2"):
        bench_sets.find_lr_file(data / "Tiny", "b", 2)


def test_lr_file_of_the_wrong_size_is_an_error(data):
    _save(_image(10, 10, 9), data / "Tiny" / "LR_bicubic" / "X2" / "ax2.png")
    with pytest.raises(LiifError, match="expected 20x20"):
        bench_sets.make_pair(data / "Tiny" / "HR" / "a.png", data / "Tiny", 2)


def test_sets_are_found_by_name_case_and_under_bench(data, tmp_path):
    assert bench_sets.find_set(data, "tiny") == data / "Tiny"
    (tmp_path / "outer").mkdir()
    (data).rename(tmp_path / "outer" / "bench")
    assert bench_sets.find_set(tmp_path / "outer", "Tiny") == tmp_path / "outer" / "bench" / "Tiny"
    assert bench_sets.available_sets(tmp_path / "outer") == ["Tiny"]


# ------------------------------------------------------------------ quality


def test_quality_end_to_end(data, model, tmp_path):
    (data / "Tiny" / "HR" / "notes.txt").write_text("not an image")
    (data / "Tiny" / "HR" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored without a word
    calls = []
    result = score(["Tiny"], [2, 3], data, model, device="cpu",
                               save_images=tmp_path / "out", weights_name="tiny",
                               weights_sha256="0" * 64,
                               progress=lambda *args: calls.append(args))
    assert set(result) == QUALITY_KEYS
    assert result["kind"] == "quality" and result["weights_name"] == "tiny"
    assert result["model_spec"] == TINY.to_dict()
    assert len(result["warnings"]) == 1 and "notes.txt" in result["warnings"][0]
    assert [c[:2] for c in calls] == [(i, 4) for i in range(1, 5)]

    x2, x3 = result["results"]
    for entry in (x2, x3):
        assert set(entry) == QUALITY_ENTRY_KEYS
        assert entry["n_images"] == 2 and [r["image"] for r in entry["images"]] == ["a", "b"]
        for row in entry["images"]:
            assert set(row) == QUALITY_IMAGE_KEYS
            for key in ("model", "bicubic", "lanczos"):
                assert math.isfinite(row[key]["psnr"]) and -1 <= row[key]["ssim"] <= 1
        for key in ("model", "bicubic", "lanczos"):
            mean = np.mean([r[key]["psnr"] for r in entry["images"]])
            assert entry[key]["psnr"] == pytest.approx(mean)
        assert entry["gain_psnr"] == pytest.approx(entry["model"]["psnr"]
                                                   - entry["bicubic"]["psnr"])
        # A sensible baseline on smooth images, a random model far below it.
        assert entry["bicubic"]["psnr"] > 25 and entry["gain_psnr"] < 0
    assert (x2["scale"], x2["shave"], x2["lr_source"]) == (2.0, 2, "file")
    assert x2["lr_folder"] == str(Path("Tiny") / "LR_bicubic" / "X2")
    assert (x3["scale"], x3["shave"], x3["lr_source"], x3["lr_folder"]) == (3.0, 3,
                                                                             "pil-bicubic", None)
    assert x3["images"][1]["hr_size"] == [36, 42] and x3["images"][1]["lr_size"] == [12, 14]

    saved = tmp_path / "out" / "Tiny" / "x3" / "b.png"
    assert Image.open(saved).size == (42, 36)
    # A second run refuses to overwrite the saved images, before rendering anything.
    with pytest.raises(LiifError, match="already exists"):
        score(["Tiny"], [3], data, model, save_images=tmp_path / "out")

    # Strict JSON round trip.
    path = report.write_json(result, tmp_path / "r.json")
    loaded = json.loads(path.read_text())
    assert set(loaded) == QUALITY_KEYS and loaded["results"][0]["images"][0]["image"] == "a"
    with pytest.raises(LiifError, match="already exists"):
        report.write_json(result, path)
    report.write_json(result, path, overwrite=True)


def test_quality_with_degraded_inputs(data, model):
    clean = score(["Tiny"], [2, 3], data, model)
    assert clean["degrade"] is None
    noisy = score(["Tiny"], [2, 3], data, model, degrade="noise:8")
    again = score(["Tiny"], [2, 3], data, model, degrade="noise:8")
    assert noisy["degrade"] == "noise:8" and "noise:8" in noisy["protocol"]
    for c, n, a in zip(clean["results"], noisy["results"], again["results"], strict=True):
        # Ready-made (x2) and home-made (x3) inputs alike: noisier inputs, lower scores,
        # the same numbers on every run (noise seeded per image).
        assert n["bicubic"]["psnr"] < c["bicubic"]["psnr"] - 1
        assert n["lr_source"] == c["lr_source"]
        for key in ("model", "bicubic", "lanczos"):
            assert n[key] == a[key]
    jpeg = score(["Tiny"], [2], data, model, degrade="jpeg:20")
    assert jpeg["results"][0]["bicubic"]["psnr"] < clean["results"][0]["bicubic"]["psnr"]
    assert "LR inputs degraded with jpeg:20" in _table_text(jpeg)
    with pytest.raises(LiifError, match="bad --degrade 'jpeg:101'"):
        score(["Tiny"], [2], data, model, degrade="jpeg:101")


def test_saved_images_of_clean_and_degraded_runs_do_not_clash(data, model, tmp_path):
    """--save-images of a degraded run go to their own folder (x2-blur1-jpeg75), so a clean
    run's outputs are neither refused as existing nor replaced under --overwrite."""
    out = tmp_path / "saved"
    score(["Tiny"], [2], data, model, save_images=out)
    clean = {p.name: p.read_bytes() for p in (out / "Tiny" / "x2").iterdir()}
    score(["Tiny"], [2], data, model, save_images=out, degrade="blur:1+jpeg:75")
    degraded = sorted(p.name for p in (out / "Tiny" / "x2-blur1-jpeg75").iterdir())
    assert degraded == sorted(clean) == ["a.png", "b.png"]
    assert {p.name: p.read_bytes() for p in (out / "Tiny" / "x2").iterdir()} == clean


def _table_text(result) -> str:
    out = io.StringIO()
    report.print_quality(Console(file=out, width=250), result)
    return out.getvalue()


def test_perfect_model_scores_infinite_psnr_and_json_null(tmp_path, model, monkeypatch):
    # A "model" that returns the HR image exactly: PSNR inf, SSIM 1, JSON null.
    root = tmp_path / "d"
    hr = _image(32, 32, 5)
    _save(hr, root / "S" / "HR" / "x.png")
    monkeypatch.setattr("liif_cli.engine.render",
                        lambda model, image, size, **kw: torch.from_numpy(hr).permute(2, 0, 1)
                        .float() / 255)
    result = score(["S"], [2], root, model)
    entry = result["results"][0]
    assert entry["model"]["psnr"] == math.inf and entry["model"]["ssim"] == pytest.approx(1.0)
    assert json.loads(report.to_json(result))["results"][0]["model"]["psnr"] is None


@pytest.mark.parametrize("case, match", [
    ("no_root", "not found"),
    ("unknown_set", "unknown benchmark set 'Nope'.*available: Tiny"),
    ("no_hr", "no HR folder"),
    ("empty_hr", "holds no images"),
    ("scale_1", "greater than 1"),
    ("corrupt", "cannot read image"),
    ("too_small", "too small"),
])
def test_quality_bad_input(case, match, data, model):
    sets, scales, root = ["Tiny"], [2.0], data
    if case == "no_root":
        root = data / "missing"
    elif case == "unknown_set":
        sets = ["Nope"]
    elif case == "no_hr":
        (data / "Empty").mkdir()
        sets = ["Empty"]
    elif case == "empty_hr":
        (data / "Empty" / "HR").mkdir(parents=True)
        (data / "Empty" / "HR" / "readme.md").write_text("x")
        sets = ["Empty"]
    elif case == "scale_1":
        scales = [2.0, 1.0]
    elif case == "corrupt":
        (data / "Tiny" / "HR" / "a.png").write_bytes(b"not a png")
    elif case == "too_small":
        scales = [16.0]  # a: LR 2x2, HR crop 32x32, nothing left after shaving 16
    with pytest.raises(LiifError, match=match):
        score(sets, scales, root, model)


def test_data_root_from_environment(monkeypatch, data):
    monkeypatch.delenv("LIIF_DATA", raising=False)
    with pytest.raises(LiifError, match="LIIF_DATA"):
        bench_sets.resolve_data_root(None)
    monkeypatch.setenv("LIIF_DATA", str(data))
    assert bench_sets.resolve_data_root(None) == data


# ------------------------------------------------------------------ speed


def test_speed_end_to_end(model):
    result = speed.run_speed(model, (16, 16), [2], device="cpu", repeats=1, warmup=0)
    assert set(result) == SPEED_KEYS and result["kind"] == "speed"
    assert result["timer"] == "wall clock (time.perf_counter)"
    (entry,) = result["results"]
    assert set(entry) == SPEED_ENTRY_KEYS
    assert entry["output_size"] == [32, 32] and entry["rows"] == [0, 32]
    for key in ("engine", "reference"):
        assert set(entry[key]) == TIMING_KEYS and len(entry[key]["seconds"]) == 1
        assert entry[key]["mp_per_s"] > 0
    assert entry["speedup"] > 0 and entry["max_abs_diff"] < 1e-4
    json.loads(report.to_json(result))


def test_speed_band_renders_the_same_rows(model):
    result = speed.run_speed(model, (12, 10), [2.5], repeats=2, warmup=1,
                             max_output_mp=0.0002, reference=True)
    (entry,) = result["results"]
    assert entry["output_size"] == [30, 25]
    start, stop = entry["rows"]
    assert stop - start == 8 and start == 11  # 200 px / 25 px per row, centred
    assert entry["region_mp"] == pytest.approx(8 * 25 / 1e6)
    assert len(entry["engine"]["seconds"]) == 2 and entry["max_abs_diff"] < 1e-4
    # The reference is charged the band's share of encoding the whole input once.
    for key in ("engine", "reference"):  # each charged its share of a whole-image encoding
        timing = entry[key]
        assert timing["encode_share"] == pytest.approx(8 / 30) and len(timing["seconds"]) == 2
        pairs = zip(timing["decode_seconds"], timing["whole_encode_seconds"], strict=True)
        expected = [d + e * 8 / 30 for d, e in pairs]
        assert timing["seconds"] == pytest.approx(expected, abs=1e-5)
        assert timing["mp_per_s"] == pytest.approx(
            entry["region_mp"] / statistics.median(timing["seconds"]), rel=1e-3)
    result = speed.run_speed(model, "10x12", [2], repeats=1, reference=False)
    assert result["input_size"] == [12, 10]
    assert result["results"][0]["reference"] is None and result["results"][0]["speedup"] is None


def test_band_rows():
    assert speed.band_rows((100, 50), None) == (0, 100)
    assert speed.band_rows((100, 50), 1.0) == (0, 100)
    assert speed.band_rows((100, 50), 0.001) == (40, 60)
    assert speed.band_rows((100, 5000), 1e-9) == (49, 50)  # at least one row


def test_speed_bad_input(model):
    for kwargs in (dict(scales=[0]), dict(repeats=0), dict(size=(0, 4)),
                   dict(max_output_mp=-1.0)):
        with pytest.raises(LiifError):
            speed.run_speed(model, **{"size": (8, 8), "scales": [2], **kwargs})


def test_peak_memory_is_measured_on_linux_cpu():
    if not speed.PeakMemory._cpu_supported():
        pytest.skip("needs /proc/self/clear_refs")
    with speed.PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB, touched
        del block
    assert mem.peak_bytes is not None and mem.peak_bytes > 48 * 2 ** 20


# ------------------------------------------------------------------ command and tables


def test_bench_command(data, model, tmp_path):
    weights = tmp_path / "tiny.pth"
    checkpoint.save(checkpoint.to_dict(model, {"note": "test"}), weights)
    out = io.StringIO()
    console = Console(file=out, width=200)
    result = bench.bench_command(data_root=data, sets="Tiny", scales="2,2.5",
                                 weights=str(weights), device="cpu",
                                 json_path=tmp_path / "q.json", console=console)
    text = out.getvalue()
    assert "Tiny" in text and "LR_bicubic" in text and "PIL bicubic" in text and "x2.5" in text
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["weights_sha256"] == checkpoint.file_sha256(weights)
    assert saved["weights_metadata"] == {"note": "test"}
    assert [e["scale"] for e in result["results"]] == [2.0, 2.5]

    with pytest.raises(LiifError, match="already exists"):
        bench.bench_command(data_root=data, sets="Tiny", weights=str(weights),
                            json_path=tmp_path / "q.json", console=console)
    with pytest.raises(LiifError, match="greater than 1"):
        bench.bench_command(data_root=data, sets="Tiny", scales="1", weights=str(weights),
                            console=console)

    out.truncate(0)
    result = bench.bench_command(speed=True, size="16x12", scales="2", repeats=1,
                                 weights=str(weights), device="cpu", console=console)
    assert result["input_size"] == [12, 16] and result["max_output_mp"] == 0.25
    assert "Speed-up" in out.getvalue() and "peak memory" in out.getvalue()


def test_liif_bench_cli_end_to_end_and_errors(data, model, tmp_path):
    from typer.testing import CliRunner

    from liif_cli.cli import app

    weights = tmp_path / "tiny.pth"
    checkpoint.save(checkpoint.to_dict(model, {}), weights)

    def liif_bench(*args):
        return CliRunner().invoke(app, ["bench", "-w", str(weights), "--device", "cpu",
                                        *map(str, args)])

    result = liif_bench("--data-root", data, "--sets", "Tiny", "--scales", "2,3",
                        "--json", tmp_path / "q.json")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "q.json").read_text())
    assert [e["scale"] for e in saved["results"]] == [2.0, 3.0]
    assert "Tiny" in result.output and "Bicubic" in result.output

    result = liif_bench("--speed", "--size", "12x10", "--scales", "2", "--repeats", "1")
    assert result.exit_code == 0, result.output
    assert "Speed-up" in result.output
    assert "bench: x2 engine (1/2)" in result.output  # not a terminal: plain progress lines

    empty = data / "Empty" / "HR"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    result = liif_bench("--data-root", data, "--sets", "Tiny", "--scales", "2",
                        "--degrade", "blur:1+jpeg:75", "--json", tmp_path / "d.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d.json").read_text())["degrade"] == "blur:1+jpeg:75"
    assert "degraded with blur:1+jpeg:75" in result.output
    assert "X2 + blur:1+jpeg:75" in result.output  # the ready-made x2 inputs, degraded

    for args, words in ((("--sets", "Nope"), "Nope"), (("--sets", "Empty"), "Empty"),
                        (("--sets", "Tiny", "--scales", "1"), "greater than 1"),
                        (("--degrade", "jpeg:abc"), "bad --degrade 'jpeg:abc'"),
                        (("--degrade", "wobble:3"), "unknown degradation"),
                        (("--degrade", "noise:-1"), "noise sigma"),
                        (("--speed", "--degrade", "jpeg:75"), "quality benchmark")):
        result = liif_bench("--data-root", data, *args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code != 0 and len(lines) == 1, result.output
        assert lines[0].startswith("error:") and words in lines[0], result.output


def test_names_that_look_like_markup_print_as_they_are(data, model, tmp_path):
    """Set, file and weights names are text in the tables, never Rich markup."""
    (data / "Tiny" / "HR" / "notes[draft].txt").write_text("not an image")
    weights = tmp_path / "model[final].pth"
    checkpoint.save(checkpoint.to_dict(model, {}), weights)
    out = io.StringIO()
    bench.bench_command(data_root=data, sets="Tiny", scales="2", weights=str(weights),
                        device="cpu", console=Console(file=out, width=300))
    assert "notes[draft].txt" in out.getvalue() and "model[final].pth" in out.getvalue()


def test_a_set_named_twice_runs_once_and_clashing_names_are_refused(data, model, tmp_path):
    plan = bench_sets.plan_quality(["Tiny", "tiny"], [2, 2.0000001], data,
                                   save_images=tmp_path / "saved")
    assert [name for name, _, _ in plan.sets] == ["Tiny"] and plan.scales == [2.0]
    _save(_image(40, 40, 5), data / "Tiny" / "HR" / "a.bmp")  # beside a.png
    with pytest.raises(LiifError, match="a.bmp and a.png share the name 'a'|"
                                        "a.png and a.bmp share the name 'a'"):
        bench_sets.plan_quality(["Tiny"], [2], data)


def test_json_results_survive_odd_metadata_and_odd_targets(data, model, tmp_path):
    """Checked before the benchmark: a --json path that is a dangling link or the
    --save-images folder; and metadata JSON cannot hold (a tensor) is written as text."""
    from liif_cli.bench.command import prepare_bench

    weights = tmp_path / "meta.pth"
    checkpoint.save(checkpoint.to_dict(model, {"best_psnr": torch.tensor(33.5)}), weights)
    base = dict(data_root=data, sets="Tiny", scales="2", weights=str(weights), device="cpu",
                console=Console(file=io.StringIO()))
    bench.bench_command(**base, json_path=tmp_path / "q.json")
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["weights_metadata"] == {"best_psnr": "tensor(33.5000)"}
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere")
    with pytest.raises(LiifError, match="dangling.json already exists"):
        prepare_bench(**base, json_path=tmp_path / "dangling.json")
    with pytest.raises(LiifError, match="--json and --save-images both name"):
        prepare_bench(**base, json_path=tmp_path / "same", save_images=tmp_path / "same")


def test_training_speed_cli_rejects_bad_options(tmp_path):
    from typer.testing import CliRunner

    from liif_cli.cli import app

    for args, words in ((("--threads", "0"), "thread counts must be 1 to 1024"),
                        (("--threads", "10000000000"), "thread counts must be 1 to 1024"),
                        (("--threads", "two"), "bad --threads"),
                        (("--batch-size", "0"), "batch size"),
                        (("--weights", "real"), "--weights applies to the quality "
                         "benchmark and --speed, not to --training (it times the training"),
                        (("--scales", "4"), "--scales applies to the quality benchmark and"),
                        (("--tile", "64"), "--tile applies to the quality benchmark and"),
                        (("--max-output-mp", "1"), "--max-output-mp applies to --speed, not"),
                        (("--sets", "Set5"), "--sets applies to the quality benchmark, not"),
                        (("--no-reference",), "--no-reference applies to --speed, not"),
                        (("--device", "cuda"), "CPU only"),
                        (("--precision", "fp16"), "bf16 (autocast) or fp32")):
        result = CliRunner().invoke(app, ["bench", "--training", *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code != 0 and len(lines) == 1, result.output
        assert lines[0].startswith("error:") and words in lines[0], result.output


@pytest.mark.parametrize("mode, args, words", [
    ("--speed", ("--threads", "2"), "--threads applies to --training, not to --speed"),
    ("--speed", ("--batch-size", "2"), "--batch-size applies to --training, not to --speed"),
    ("--speed", ("--sets", "Set5"), "--sets applies to the quality benchmark, not to --speed"),
    ("--speed", ("--data-root", "."), "--data-root applies to the quality benchmark, not"),
    ("--speed", ("--degrade", "jpeg:75"), "--degrade applies to the quality benchmark, not"),
    ("--speed", ("--tile", "1"), "--tile 1 is too small"),
    ("--speed", ("--max-output-mp", "-5"), "bad --max-output-mp -5.0: must be 0"),
    (None, ("--size", "8x8"), "--size applies to --speed, not to the quality benchmark"),
    (None, ("--max-output-mp", "1"), "--max-output-mp applies to --speed, not to the quality"),
    (None, ("--no-reference",), "--no-reference applies to --speed, not to the quality"),
    (None, ("--repeats", "2"), "--repeats applies to --speed and --training, not to the "),
    (None, ("--threads", "2"), "--threads applies to --training, not to the quality"),
])
def test_options_for_another_benchmark_are_usage_errors(mode, args, words):
    """An option the chosen benchmark would ignore is refused before anything runs."""
    from typer.testing import CliRunner

    from liif_cli.cli import app

    result = CliRunner().invoke(app, ["bench", *([mode] if mode else []), *args])
    assert result.exit_code == 2 and words in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_training_speed_follows_precision(monkeypatch):
    """--training trains under bf16 autocast by default and in plain fp32 with
    --precision fp32 (auto: bf16 where the CPU has bf16 units)."""
    from liif_cli.bench import command
    from liif_cli.engine import cpu_has_fast_bf16

    seen = []

    def fake_run(**kw):
        seen.append(kw["amp"])
        return {"kind": "training-speed", "rows": []}

    monkeypatch.setattr("liif_cli.bench.report.print_training_speed", lambda console, r: None)
    monkeypatch.setattr("liif_cli.bench.training.run_training_speed", fake_run)
    for precision in (None, "bf16", "fp32", "auto"):
        command.bench_command(training=True, threads="1", precision=precision)
    assert seen == ["cpu", "cpu", None, "cpu" if cpu_has_fast_bf16() else None]


def test_bench_status_lines_go_to_stderr(tmp_path, capsys, monkeypatch):
    """The tables are the result (stdout); 'wrote FILE' is a status line (stderr)."""
    from liif_cli.bench import command

    result = {"kind": "training-speed", "rows": []}
    monkeypatch.setattr("liif_cli.bench.report.print_training_speed", lambda console, r: None)
    monkeypatch.setattr("liif_cli.bench.training.run_training_speed", lambda **kw: result)
    command.bench_command(training=True, threads="1", json_path=tmp_path / "t.json")
    captured = capsys.readouterr()
    assert f"wrote {tmp_path / 't.json'}" in captured.err and "wrote" not in captured.out
    assert json.loads((tmp_path / "t.json").read_text())["kind"] == "training-speed"


def test_bench_usage_errors_exit_2_without_torch(tmp_path, cli_in_fresh_process):
    """Bad options, benchmark data and weights files are usage errors (exit 2), answered
    before torch is imported."""
    (tmp_path / "file").write_text("x")
    for args in (["--scales", "abc"], ["--training", "--threads", "0"],
                 ["--speed", "--size", "0x16"], ["--sets", ","],
                 ["--speed", "--save-images", tmp_path / "out"],
                 ["--json", tmp_path / "file" / "r.json"],
                 ["--save-images", tmp_path / "file"], ["--degrade", "jpeg:500"],
                 ["--degrade", "sharpen:2"], ["--data-root", tmp_path / "nowhere"],
                 ["--data-root", tmp_path], ["--speed", "--weights", tmp_path / "nowhere.pth"]):
        assert cli_in_fresh_process(["bench", *args]) == (2, False), args


def test_bench_checks_every_image_and_output_before_rendering(data, model, tmp_path,
                                                              monkeypatch):
    """An unreadable last image, or a --save-images or --json path that cannot be written,
    fails before the first render, not after an hour of them."""
    renders = []
    monkeypatch.setattr("liif_cli.engine.render", lambda *a, **kw: renders.append(1))
    (data / "Tiny" / "HR" / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(LiifError, match="z.png"):
        score(["Tiny"], [2], data, model)
    (data / "Tiny" / "HR" / "z.png").unlink()
    (tmp_path / "file").write_text("x")
    with pytest.raises(LiifError, match="not a folder"):
        score(["Tiny"], [2], data, model, save_images=tmp_path / "file")
    with pytest.raises(LiifError, match="not a folder"):
        options.check_json_target(tmp_path / "file" / "r.json")
    lr_file = data / "Tiny" / "LR_bicubic" / "X2" / "bx2.png"  # its header intact, cut short
    lr_file.write_bytes(lr_file.read_bytes()[:-40])
    with pytest.raises(LiifError, match="bx2.png"):
        score(["Tiny"], [2], data, model)
    assert not renders


def test_bench_json_never_lands_in_a_set_folder(data, model, tmp_path):
    """--json onto a benchmark image (or anywhere in its set's folder) is refused, with
    --overwrite too, before any render: it would replace the image."""
    weights = tmp_path / "tiny.pth"
    checkpoint.save(checkpoint.to_dict(model, {}), weights)
    hr_file = data / "Tiny" / "HR" / "a.png"
    before = hr_file.read_bytes()
    for target in (hr_file, data / "Tiny" / "LR_bicubic" / "X2" / "ax2.png",
                   data / "Tiny" / "results.json"):
        with pytest.raises(LiifError, match="inside set Tiny's folder"):
            command.prepare_bench(data_root=data, sets="Tiny", scales="2", json_path=target,
                                  overwrite=True, weights=str(weights))
    assert hr_file.read_bytes() == before
    assert not (data / "Tiny" / "results.json").exists()


def test_speed_checks_every_scale_before_rendering(model, monkeypatch):
    """A scale whose output no image could hold, or whose one output row is over the band
    cap, fails before the first scale renders (its results would be lost)."""
    renders = []
    monkeypatch.setattr(speed, "_time_engine", lambda *a, **kw: renders.append(1))
    with pytest.raises(LiifError, match="scale 1000000000: output side"):
        speed.run_speed(model, size=(8, 8), scales=[2, 1e9], repeats=1)
    with pytest.raises(LiifError, match="one output row"):
        speed.run_speed(model, size=(8, 8), scales=[2, 1e5], repeats=1, max_output_mp=0.25)
    assert not renders


def test_bench_saves_outputs_atomically(data, model, tmp_path, monkeypatch):
    """Saved outputs go through images.write_image (a temporary file, then a rename)."""
    from liif_cli import images

    written = []

    def spy(picture, path, **kwargs):
        written.append(Path(path))
        return images.write_image(picture, path, **kwargs)

    monkeypatch.setattr(quality, "write_image", spy)
    score(["Tiny"], [2], data, model, save_images=tmp_path / "out")
    saved = sorted((tmp_path / "out" / "Tiny" / "x2").iterdir())
    assert [p.name for p in saved] == ["a.png", "b.png"] and sorted(written) == saved


def test_bench_out_of_memory_is_one_line(data, model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from liif_cli.cli import app

    weights = tmp_path / "tiny.pth"
    checkpoint.save(checkpoint.to_dict(model, {}), weights)

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr("liif_cli.bench.speed.run_speed", no_memory)
    result = CliRunner().invoke(app, ["bench", "--speed", "-w", str(weights), "--device", "cpu",
                                      "--size", "8x8", "--scales", "2"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "out of memory" in lines[0] and "--size" in lines[0]


def test_thread_counts_are_parsed_each_once_in_order():
    assert options.parse_threads("2, 1,2") == [2, 1]
    assert options.parse_threads([1, 1]) == [1]
    for bad in ("0", "1,x", ""):
        with pytest.raises(LiifError, match="--threads"):
            options.parse_threads(bad)

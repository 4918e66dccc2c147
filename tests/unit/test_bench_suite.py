"""bench/run_suite.py: the TF-IDF+LR floor, the default configs, the table and the RESULTS.md section it owns."""

import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest

SUITE_PATH = Path(__file__).resolve().parents[2] / "bench" / "run_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("run_suite", SUITE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tiny_texts(n: int) -> tuple[list[str], list[str]]:
    good, bad = ["great fun film", "great acting and fun"], ["awful dull film", "awful boring and dull"]
    texts = [f"{(good if i % 2 else bad)[i % 4 // 2]} number {i}" for i in range(n)]
    return texts, ["pos" if i % 2 else "neg" for i in range(n)]


def test_floor_separates_tiny_data_and_reports_macro_f1(suite):
    floor = suite.tfidf_floor(*tiny_texts(40), *tiny_texts(10))
    assert floor.accuracy == 1.0 and floor.f1_macro == 1.0 and floor.seconds >= 0 and floor.error is None


def test_floor_on_an_imdb_layout_archive(suite, tmp_path):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        texts, labels = tiny_texts(24)
        for split in ("train", "test"):
            for i, (text, label) in enumerate(zip(texts, labels)):
                data = text.encode()
                member = tarfile.TarInfo(f"aclImdb/{split}/{label}/{i}_7.txt")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        extra = tarfile.TarInfo("aclImdb/train/unsup/0_0.txt")  # unlabelled reviews are not read
        extra.size = 1
        tar.addfile(extra, io.BytesIO(b"x"))
    (tmp_path / "imdb").mkdir()
    archive.rename(tmp_path / "imdb" / archive.name)
    splits = suite.read_imdb_archive(tmp_path / "imdb" / archive.name)
    assert len(splits["train"][0]) == 24 and sorted(set(splits["test"][1])) == ["neg", "pos"]
    floor = suite.floor_for("imdb", tmp_path)
    assert floor.error is None and floor.accuracy == 1.0


def test_floor_failure_is_recorded_not_raised(suite, tmp_path):
    floor = suite.floor_for("mr", tmp_path)
    assert floor.accuracy is None and "train.csv" in floor.error


def test_default_config_names_only_experiment_data_and_model_type(suite, tmp_path):
    config = suite.default_config("cr", "lstm", tmp_path)
    assert set(config) == {"experiment", "data", "model", "output"}
    assert config["model"] == {"type": "lstm"} and set(config["output"]) == {"runs_dir"}
    assert set(config["data"]) == {"format", "train", "test", "prepared_dir"}
    imdb = suite.default_config("imdb", "cnn", tmp_path)["data"]
    assert imdb["format"] == "imdb" and imdb["train"].endswith("aclImdb_v1.tar.gz") and "test" not in imdb


def sample_section(suite) -> str:
    floors = {"cr": suite.Floor(accuracy=0.788, f1_macro=0.75, seconds=1.5)}
    runs = [suite.RunResult("cr", "default cnn", train_s=42.0, epochs=5, best_epoch=3, valid_accuracy=0.8,
                            test_accuracy=0.8, f1_macro=0.78),
            suite.RunResult("cr", "default lstm", status="failed", error="exit 3: error: bad | data")]
    info = {"cpu": "Test CPU", "cores": 2, "amx": [], "avx512_bf16": True, "torch": "2.x", "python": "3.11",
            "system": "Linux"}
    return suite.render_section(runs, floors, info, "python bench/run_suite.py --only cr", "fp32", "2026-01-01")


def test_table_rows_margin_failure_and_machine(suite):
    section = sample_section(suite)
    assert section.startswith(suite.BEGIN) and section.endswith(suite.END)
    assert "| cr | default cnn | 80.00 | 78.00 | 42 s | 5 (3) | 80.00 | 78.80 | 75.00 | +1.20 (above) |" in section
    assert "default lstm **failed**: exit 3: error: bad / data" in section  # a pipe would break the table
    assert "AMX: no; avx512_bf16: yes" in section and "python bench/run_suite.py --only cr" in section


def test_section_replaces_only_its_own_part(suite):
    section = sample_section(suite)
    document = f"# Results\n\nkept above\n\n{suite.BEGIN}\nold table\n{suite.END}\n\nkept below\n"
    updated = suite.replace_section(document, section)
    assert "old table" not in updated and updated.count(suite.BEGIN) == 1
    assert updated.startswith("# Results\n\nkept above\n\n") and updated.endswith(f"{suite.END}\n\nkept below\n")
    assert suite.replace_section(updated, section) == updated
    appended = suite.replace_section("# Other\n", section)
    assert appended.startswith("# Other\n\n") and appended.endswith(suite.END + "\n")


def test_a_failing_textclf_step_is_recorded_and_the_suite_goes_on(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "WORK", tmp_path / "work")
    config = suite.write_config(suite.default_config("mr", "cnn", tmp_path), tmp_path / "mr-cnn.yaml")
    result = suite.train_and_evaluate(suite.RunResult("mr", "default cnn"), config, [], "fp32")
    assert result.status == "failed" and result.test_accuracy is None
    assert result.error.startswith("exit 3:") and "train.csv" in result.error
    assert result.commands == [f"textclf prepare {config}"]


def test_read_training_takes_epoch_times_and_peak_gpu_memory(suite, tmp_path):
    (tmp_path / "status.json").write_text('{"epochs_completed": 3, "best_epoch": 2}')
    (tmp_path / "history.csv").write_text("epoch,valid_accuracy,seconds,gpu_memory_mb\n"
                                          "1,0.8,9.5,300.0\n2,0.9,1.5,420.5\n3,0.85,2.5,310.0\n")
    result = suite.RunResult("imdb", "default cnn")
    suite.read_training(tmp_path, result)
    assert (result.epochs, result.best_epoch, result.valid_accuracy) == (3, 2, 0.9)
    assert (result.first_epoch_s, result.epoch_s, result.gpu_memory_mb) == (9.5, 2.0, 420.5)


def test_a_gpu_section_has_its_own_markers_and_columns_and_merges_from_json(suite, tmp_path):
    info = {"cpu": "Test CPU", "cores": 16, "amx": [], "avx512_bf16": False, "torch": "2.x", "python": "3.12",
            "system": "Linux", "gpu": "Test GPU, 80 GiB, CUDA 13.0"}
    parts = []
    for index, dataset in enumerate(("cr", "imdb")):
        run = suite.RunResult(dataset, "default cnn", train_s=20.0, epochs=4, best_epoch=2, test_accuracy=0.9,
                              f1_macro=0.9, first_epoch_s=4.8, epoch_s=1.4, gpu_memory_mb=1534.5)
        parts.append(tmp_path / f"part{index}.json")
        parts[-1].write_text(suite.json.dumps({
            "command": f"python bench/run_suite.py --only {dataset}", "date": "2026-01-01", "machine": info,
            "precision": "fp32", "train_overrides": ["train.compile=true"],
            "floors": {dataset: suite.asdict(suite.Floor(accuracy=0.8, f1_macro=0.8, seconds=1.0))},
            "runs": [suite.asdict(run)]}))
    results = tmp_path / "RESULTS.md"
    results.write_text(f"{suite.BEGIN}\nthe CPU table\n{suite.END}\n")
    suite.main(["--from-json", *map(str, parts), "--section", "suite-gpu", "--results", str(results)])
    document = results.read_text()
    assert document.startswith(f"{suite.BEGIN}\nthe CPU table\n{suite.END}")  # the CPU section is kept
    begin, end = suite.markers("suite-gpu")
    section = document[document.index(begin):document.index(end)]
    assert "on Test GPU, 80 GiB, CUDA 13.0" in section and "Every train also had `train.compile=true`." in section
    assert "python bench/run_suite.py --only cr\npython bench/run_suite.py --only imdb" in section
    assert "| epoch 1 / median epoch | peak GPU memory |" in section
    assert "| +10.00 (above) | - | 4.8 s / 1.4 s | 1,534 MB |" in section and section.count("| default cnn |") == 2


def test_a_section_name_must_be_a_plain_word(suite):
    with pytest.raises(SystemExit):
        suite.parse_args(["--section", "gpu --> x"])


def test_seeds_give_a_row_per_seed_and_a_table_of_means(suite):
    floors = {"mr": suite.Floor(accuracy=0.80, f1_macro=0.80, seconds=1.0)}
    runs = [suite.RunResult("mr", "default cnn", seed, train_s=30.0, test_accuracy=accuracy, f1_macro=accuracy)
            for seed, accuracy in ((42, 0.79), (1, 0.82), (2, 0.83))]
    runs.append(suite.RunResult("mr", "default lstm", 42, status="failed", error="exit 1: error: x"))
    info = {"cpu": "Test CPU", "cores": 2, "amx": [], "avx512_bf16": False, "torch": "2.x", "python": "3.11",
            "system": "Linux"}
    section = suite.render_section(runs, floors, info, "python bench/run_suite.py --seeds 42,1,2", "fp32", "today")
    assert "| mr | default cnn, seed 42 | 79.00 |" in section and "| mr | default cnn, seed 2 | 83.00 |" in section
    assert "| mr | default cnn | 42, 1, 2 | 81.33 | 2.08 | 79.00 - 83.00 | 81.33 | 30 s | 80.00 | +1.33 (above) " \
           "| 2 of 3 |" in section
    assert "| mr | default lstm | 42 |" not in section  # no finished run: no mean
    single = suite.render_section(runs[:1], floors, info, "python bench/run_suite.py", "fp32", "today")
    assert "Mean over seeds" not in single


def test_every_seed_trains_and_prepares_with_its_own_seed(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "WORK", tmp_path / "work")
    calls = []
    monkeypatch.setattr(suite, "train_and_evaluate", lambda result, config, overrides, *rest: calls.append(
        (result.model, result.seed, overrides)) or result)
    results = list(suite.run_dataset("mr", tmp_path, "fp32", seeds=[42, 7]))
    assert [(r.model, r.seed) for r in results] == [("default cnn", 42), ("default cnn", 7), ("default lstm", 42),
                                                    ("default lstm", 7)]
    assert calls[1][2] == ["seed=7"]  # train_and_evaluate passes these to prepare and to train
    assert [r.seed for r in suite.run_dataset("mr", tmp_path, "fp32")] == [None, None]


@pytest.mark.parametrize("value", ["a,b", "1,1", ","])
def test_seeds_must_be_different_whole_numbers(suite, value):
    with pytest.raises(SystemExit):
        suite.parse_args(["--seeds", value])


def test_models_chooses_which_configs_train(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "WORK", tmp_path / "work")
    monkeypatch.setattr(suite, "train_and_evaluate", lambda result, *rest: result)
    args = suite.parse_args(["--models", "cnn,configs/cnn.yaml"])
    assert [r.model for r in suite.run_dataset("imdb", tmp_path, None, models=args.models)] == [
        "default cnn", "configs/cnn.yaml"]
    assert [r.model for r in suite.run_dataset("mr", tmp_path, None, models=args.models)] == ["default cnn"]
    with pytest.raises(SystemExit):
        suite.parse_args(["--models", "cnn,bert"])

"""Every file and folder name textclf writes, in one place (scripts and cron jobs read these)."""

# run folder: runs/<experiment>/<run-id>/
CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
HISTORY_FILE = "history.csv"
TRAIN_LOG = "train.log"
CURVES_PNG = "training_curves.png"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
SELECTED_CHECKPOINT = "selected.pt"  # train.refit: the model chosen on validation (best.pt is its refit)
EVALUATION_DIR = "evaluation"
LATEST_LINK = "latest"
BEST_LINK = "best"
LOCK_FILE = ".lock"  # runs/<experiment>/.lock guards the links; <run-id>/.lock is held while a process trains

# temporary names (a killed process can leave them; the next run or prune of the experiment removes them)
TEMP_SUFFIX = ".tmp"  # .<file>.<random>.tmp beside the file an atomic write replaces
DOWNLOAD_SUFFIX = ".part"  # .<archive>.<random>.part beside a download in progress

# evaluation/<split>/
METRICS_FILE = "metrics.json"
REPORT_FILE = "classification_report.txt"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
ERRORS_CSV = "errors.csv"  # the misclassified texts, most confident first
TOP_CONFUSIONS_CSV = "top_confusions.csv"  # the most frequent (gold, predicted) pairs among the errors
ROC_PNG, PR_PNG = "roc.png", "pr.png"  # ROC and precision-recall curves (one-vs-rest beyond two labels)
CHANGED_CSV = "changed.csv"  # evaluate --compare: the texts whose prediction differs from the other run's
RELIABILITY_PNG = "reliability.png"  # confidence against accuracy, before and after calibration
RISK_COVERAGE_CSV, RISK_COVERAGE_PNG = "risk_coverage.csv", "risk_coverage.png"  # accuracy at each coverage
PER_LABEL_CSV = "per_label.csv"  # multilabel: threshold, precision, recall, f1, support, tn, fp, fn, tp per label
PER_LABEL_F1_PNG = "per_label_f1.png"  # multilabel

# prepared data: data/prepared/<fingerprint>/
PREPARED_META = "meta.json"
PREPARED_VOCAB = "vocab.json"
PREPARED_LABELS = "labels.json"
PREPARED_IDS = "{split}.ids.npy"
PREPARED_OFFSETS = "{split}.offsets.npy"
PREPARED_TARGETS = "{split}.labels.npy"

# textclf export: <run>/export/
EXPORT_DIR = "export"
EXPORT_ONNX = "model.onnx"
EXPORT_ONNX_INT8 = "model.int8.onnx"  # export --quantize int8
EXPORT_TORCHSCRIPT = "model.torchscript.pt"
TENSORBOARD_DIR = "tensorboard"

# tune study: runs/<experiment>/tune-<study-id>/ (its trials are run folders inside it)
STUDY_PREFIX = "tune-"
STUDY_DB = "study.db"
STUDY_CONFIG = "study.yaml"
TUNE_LOG = "tune.log"
BEST_CONFIG = "best.yaml"
TRIALS_CSV = "trials.csv"
TUNING_PNG = "tuning.png"

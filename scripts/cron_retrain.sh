#!/usr/bin/env bash
# Retrain from cron: train CONFIG, point runs/<experiment>/best at the new run only when it beats the current
# best run on the validation metric, keep every log line, and exit with textclf's own exit code
# (0 ok, 2 config/usage, 3 data, 4 run/checkpoint, 130 interrupted).
#
# Silent on success (cron mails only when something went wrong); everything goes to the log file.
#
#   crontab -e:
#   30 2 * * * /srv/textclf/scripts/cron_retrain.sh configs/cnn.yaml
#
# The story ends with a running server: `textclf serve runs/<experiment>` (deploy/textclf-serve.service under
# systemd) follows runs/<experiment>/best, so when a night's run is promoted the server loads it beside the
# model it serves, warms it up and swaps it in within --reload-every (30s), without a restart or a failed
# request; a run that is not better leaves best, and the server, as they were. docs/guides/serving.md.
#
# Environment (all optional):
#   TEXTCLF_DIR  folder to run in (relative config and runs paths start here); default: this repository
#   TEXTCLF_LOG  log file; default: logs/cron_retrain.log under TEXTCLF_DIR
#   TEXTCLF      the command to run; default: textclf (cron's PATH is short: give a full path if needed)
#   TEXTCLF_KEEP_RUNS  runs to keep per experiment (output.keep_runs: older finished runs are deleted after a
#                successful train; best, latest and live runs never are); default 30; "all" keeps every run
# Extra arguments after CONFIG go to `textclf train` (e.g. --set train.epochs=10).
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 CONFIG [textclf train options...]" >&2
    exit 2
fi
config=$1
shift
cd "${TEXTCLF_DIR:-$(dirname "$0")/..}" || exit 2
log=${TEXTCLF_LOG:-logs/cron_retrain.log}
mkdir -p "$(dirname "$log")" || exit 2
read -r -a textclf <<< "${TEXTCLF:-textclf}"
keep=${TEXTCLF_KEEP_RUNS:-30}
retention=()
if [ "$keep" != "all" ]; then
    retention=(--set "output.keep_runs=$keep")  # a bounded disk: textclf prunes after each successful train
fi

stamp() { date -u +%Y-%m-%dT%H:%M:%S; }

echo "$(stamp) cron_retrain: start $config" >> "$log"
# stdout is the run folder; stderr (one timestamped line per epoch, the promotion decision, errors) is the log
run_dir=$("${textclf[@]}" train "$config" --promote-if-better "${retention[@]}" "$@" 2>> "$log")
code=$?
if [ "$code" -eq 0 ]; then
    echo "$(stamp) cron_retrain: ok $run_dir" >> "$log"
else
    echo "$(stamp) cron_retrain: failed with exit code $code" >> "$log"
    echo "cron_retrain: textclf train $config failed with exit code $code; last lines of $log:" >&2
    tail -n 5 "$log" >&2
fi
exit "$code"

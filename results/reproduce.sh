#!/usr/bin/env bash
# Every sweep and report of results/README.md, in the order they were run (about 35 minutes on 2 CPU
# cores). Sweeps go to the default MLflow store (results/mlflow.db); reports to results/<name>/.
#   bash results/reproduce.sh            # everything
#   bash results/reproduce.sh reports    # only the reports, from sweeps already in the store
set -euo pipefail
cd "$(dirname "$0")/.."

# The schedule every laptop-profile sweep below shares (blocking/baselines/weight_trace.yaml have it in
# their laptop profile; aggregators.yaml and offsets.yaml get it on the command line).
SCHEDULE=(--set train.epochs=3 --set train.iters_per_epoch=40 --set train.batch_size=16 --set optim.lr=1.0e-3
          --set train.weight_trace_every=4 --set data.feature_dim=128 --set data.train_videos=16
          --set data.val_videos=8 --set data.frames_per_video=64)

if [[ "${1:-}" != reports ]]; then
  cat-ray tune search_spaces/aggregators.yaml --name aggregators-results "${SCHEDULE[@]}"       # Tables IV, VIII, IX
  cat-ray tune search_spaces/blocking.yaml --name blocking-results                             # Tables V, VI (CR axis)
  cat-ray tune search_spaces/offsets.yaml --name offsets-results "${SCHEDULE[@]}"               # Table VII
  cat-ray tune search_spaces/weight_trace.yaml --name weight-trace-results                     # Fig. 7, Table IV
  cat-ray tune search_spaces/baselines.yaml --name baselines-results                           # Table X
  cat-ray tune search_spaces/longer.yaml --name longer-results                                 # 3x longer schedule
  cat-ray tune search_spaces/blocking.yaml --profile laptop_cnsc --name blocking-cnsc-results  # Tables V, VI (CnSc axis)
  python benchmarks/aggregation.py > results/runtime/aggregation.txt                           # Sec. IV-I
fi

cat-ray report aggregators-results --out results/aggregators --group-by aggregator,CR --x CR \
  --title "Tables VIII and IX: aggregators at CR 0 and 33 % (centre blocking, CnSc 1)"
cat-ray report offsets-results weight-trace-results --out results/offsets --group-by offsets --baseline offsets=-2..2 \
  --title "Table VII: offset sets of the confidence-aware aggregator"
cat-ray report offsets-results weight-trace-results --out results/predictors --where "offsets=1,0,-1|-2..2|-3..3" \
  --group-by offsets --baseline offsets=-2..2 --weight-trace \
  --title "Table IV and Fig. 7: each predictor alone against the aggregate; aggregation weights during training"
cat-ray report aggregators-results blocking-results --out results/blocking_ratio --where "aggregator=single|vibe|confidence" \
  --where "CnSc=2|-" --group-by blocking,CR,aggregator --x CR \
  --title "Tables V and VI: centre and random blocking at CR 0, 10, 33 % (CnSc 2)"
cat-ray report aggregators-results blocking-results blocking-cnsc-results --out results/blocking_consecutive \
  --where "aggregator=single|vibe|confidence" --where CR=0.33 --group-by blocking,CnSc,aggregator --x CnSc \
  --title "Tables V and VI: CnSc 1, 2, 3 at CR 33 %"
cat-ray report aggregators-results baselines-results --out results/baselines \
  --where "aggregator=single|lstm_kalman|thmr|vibe|confidence" --group-by CR,aggregator \
  --title "Table X: single frame, LSTM-Kalman, temporal HMR, VIBE and confidence-aware (centre blocking)"
cat-ray report longer-results --out results/longer --group-by aggregator --weight-trace \
  --title "Aggregators at CR 33 % (centre, CnSc 2) with a 3x longer schedule (360 steps)"

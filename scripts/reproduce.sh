#!/usr/bin/env bash
# Runs the named experiments behind the README's results table (seeds 0, 1, 2 each), then
# writes one sweep report per experiment under reports/. About an hour on a 2-core CPU.
#   AEAD_DATA_DIR=../shared/datasets bash scripts/reproduce.sh
set -euo pipefail
SEEDS=${SEEDS:-0,1,2}
for experiment in conv_bce_mnist conv_ssim_fashion contaminated_mse one_class_zero dense_mae_noise; do
  python -m aead.run -m experiment=$experiment seed=$SEEDS   # one_class_zero: x conv,deep_conv,cnn
  python -m aead.report --experiment $experiment --out reports/$experiment
done
# K-fold cross-validation of the supervised baseline
python -m aead.run experiment=one_class_zero model=cnn trainer.kfold=5 run_name=cnn-kfold5

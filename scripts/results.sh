#!/usr/bin/env bash
# Set up (if needed) and make docs/results.md: the dev-tuning grids, then each comparison, in one `kdkit compare`.
# Finished runs under runs/results and runs/tuning are reused, so an interrupted call picks up where it stopped.
# Pass comparison files to make a document of just those, e.g. experiments/compare_minilm_narrow_rt.yaml;
# `retrieval` makes docs/retrieval.md (TCT-ColBERT) instead, `generation` docs/generation.md (token-level KD with
# 15-block students, noisy self-distillation; `generation-all` also the tuning table and docs/generation_gen_bbc.md),
# `compression` docs/compression_results.md (block-wise embedding compression), `dataset-distillation`
# docs/dataset_distillation_results.md, `dual-policy-distillation` docs/dpd_results.md,
# docs/dpd_results_hopper.md (DPD-PPO vs PPO on MuJoCo) and docs/dpd_results_td3.md (DPD-TD3 vs TD3),
# `full` docs/results_full.md (issue 17: all training reviews plus teacher-labelled rows, 3 seeds, from GPU runs),
# `self-distillation` docs/self_distillation_results.md (the teacher-free methods of Zhang & Sabuncu 2020),
# `self-distillation-tweets` docs/self_distillation_tweets.md (the same on tweets),
# `multimodal` docs/msd_results.md (issue 19: MSD on emoji and clothing reviews),
# `ckd` docs/ckd_results.md (issue 16: CKD at the released code's setting, KD vs CKD on 3- and 4-layer students,
# TinyBERT's two stages, the DynaBERT grid with KD and with CKD).
# After `retrieval` or `dataset-distillation`, further arguments go to `kdkit compare`, e.g. `--finished-only` for the
# document of the runs finished so far (the rest named, not trained).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [ "${1:-}" = retrieval ]; then
  for archive in experiments/cpu_runs/tct-*.tgz; do  # the finished runs' small files: reused, not trained again
    [ -f "$archive" ] && tar -xzkf "$archive" 2>/dev/null || true
  done
  exec .venv/bin/kdkit compare experiments/tune_tct_bbc_seeds.yaml experiments/tune_tct_bbc_more.yaml \
       experiments/compare_tct_bbc.yaml \
       --document docs/retrieval.md --preamble experiments/retrieval_preamble.md "${@:2}"
fi
if [ "${1:-}" = generation ]; then
  exec .venv/bin/kdkit compare experiments/compare_gen15_bbc.yaml experiments/compare_noisy_bbc.yaml \
       --document docs/generation.md --preamble experiments/generation_preamble.md
fi
if [ "${1:-}" = generation-all ]; then  # also the first table (10-block students, all five losses) and the tuning
  .venv/bin/kdkit compare experiments/compare_gen_bbc.yaml --document docs/generation_gen_bbc.md
  exec .venv/bin/kdkit compare experiments/tune_gen_bbc.yaml experiments/compare_gen15_bbc.yaml \
       experiments/compare_noisy_bbc.yaml --document docs/generation.md --preamble experiments/generation_preamble.md
fi
if [ "${1:-}" = compression ]; then  # issue 15: block-wise embedding compression, tables (a), (b), (c)
  exec .venv/bin/kdkit compare experiments/compare_embed_minilm_rt.yaml experiments/compare_embed_smollm2_bbc.yaml \
       experiments/compare_embed_mpnet_minilm_rt.yaml \
       --document docs/compression_results.md --preamble experiments/compression_preamble.md
fi
if [ "${1:-}" = dataset-distillation ]; then  # issue 18: MNIST (tuning on validation, then test), Fashion, digits, text
  if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ]; then  # Fashion-MNIST is a Debian package
    apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }
  fi
  for archive in experiments/cpu_runs/dd-*.tgz; do  # the finished runs' small files: reused, not trained again
    [ -f "$archive" ] && tar -xzkf "$archive" 2>/dev/null || true
  done
  exec .venv/bin/kdkit compare experiments/tune_dd_mnist.yaml experiments/tune_dd_mnist_hard.yaml \
       experiments/compare_dd_mnist.yaml \
       experiments/compare_dd_digits.yaml experiments/compare_dd_fashion.yaml experiments/compare_dd_fashion_100.yaml \
       experiments/compare_dd_text.yaml \
       --document docs/dataset_distillation_results.md --preamble experiments/dd_preamble.md "${@:2}"
fi
if [ "${1:-}" = dual-policy-distillation ]; then  # issue 20: DPD vs one learner (PPO, TD3), HalfCheetah-v5, Hopper-v5
  for archive in experiments/cpu_runs/dpd-*.tgz; do  # the finished runs' small files: reused, not trained again
    [ -f "$archive" ] && tar -xzkf "$archive" 2>/dev/null || true
  done
  .venv/bin/kdkit compare experiments/compare_dpd_ppo_halfcheetah.yaml \
       --document docs/dpd_results.md --preamble experiments/dpd_preamble.md
  .venv/bin/kdkit compare experiments/compare_dpd_ppo_hopper.yaml \
       --document docs/dpd_results_hopper.md --preamble experiments/dpd_hopper_preamble.md
  exec .venv/bin/kdkit compare experiments/compare_dpd_td3_halfcheetah.yaml experiments/compare_dpd_td3_hopper.yaml \
       --document docs/dpd_results_td3.md --preamble experiments/dpd_td3_preamble.md
fi
if [ "${1:-}" = full ]; then  # issue 17: the runs made on a lent GPU (kept as their small files), 3 seeds
  [ -f runs/results/mpnet-minilm-rt-full/kd_+_unlabeled/seed-2/report.json ] || \
    tar -xzf experiments/device_runs/mpnet-minilm-rt-full.tgz
  exec .venv/bin/kdkit compare experiments/tune_mpnet_minilm_rt_full.yaml experiments/compare_mpnet_minilm_rt_full.yaml \
       experiments/compare_mpnet_minilm_rt_full_parts.yaml \
       --document docs/results_full.md --preamble experiments/results_full_preamble.md
fi
if [ "${1:-}" = self-distillation ]; then  # issue 17 deliver 5: CE, LS, CP, Beta smoothing, born-again 1-3
  exec .venv/bin/kdkit compare experiments/compare_self_distillation_rt.yaml \
       --document docs/self_distillation_results.md --preamble experiments/self_distillation_preamble.md
fi
if [ "${1:-}" = self-distillation-tweets ]; then  # the same comparison on tweets (its runs are archived)
  [ -f experiments/cpu_runs/self-distillation-tweets.tgz ] && \
    tar -xzkf experiments/cpu_runs/self-distillation-tweets.tgz 2>/dev/null || true  # finished runs: reused
  exec .venv/bin/kdkit compare experiments/compare_self_distillation_tweets.yaml \
       --document docs/self_distillation_tweets.md --preamble experiments/self_distillation_tweets_preamble.md
fi
if [ "${1:-}" = ckd ]; then  # issue 16
  for archive in experiments/cpu_runs/ckd-*.tgz experiments/cpu_runs/tinybert-rt.tgz \
                 experiments/cpu_runs/dynabert-rt.tgz \
                 experiments/cpu_runs/dynabert-4k-rt.tgz; do  # the finished runs' small files: reused
    [ -f "$archive" ] && tar -xzkf "$archive" 2>/dev/null || true
  done
  exec .venv/bin/kdkit compare experiments/compare_ckd_faithful_rt.yaml experiments/compare_ckd_students_rt.yaml \
       experiments/compare_tinybert_rt.yaml experiments/compare_dynabert_rt.yaml \
       experiments/compare_dynabert_4k_rt.yaml \
       --document docs/ckd_results.md --preamble experiments/ckd_preamble.md
fi
if [ "${1:-}" = multimodal ]; then  # issue 19: MSD on emoji (image + text) and clothing reviews (text + tabular)
  for archive in experiments/cpu_runs/msd-*.tgz; do  # the finished runs' small files: reused, not trained again
    tar -xzkf "$archive" 2>/dev/null || true
  done
  exec .venv/bin/kdkit compare experiments/tune_msd_emoji.yaml experiments/compare_msd_emoji.yaml \
       experiments/tune_msd_clothing.yaml experiments/compare_msd_clothing.yaml \
       --document docs/msd_results.md --preamble experiments/msd_preamble.md
fi
if [ "$#" -eq 0 ]; then
  set -- experiments/tune_minilm_narrow_rt.yaml experiments/compare_minilm_narrow_rt.yaml \
         experiments/tune_minilm_narrow_bbc.yaml experiments/compare_minilm_narrow_bbc.yaml \
         experiments/compare_bilstm_rt.yaml \
         experiments/tune_mpnet_minilm_rt.yaml experiments/tune_mpnet_minilm_rt_aux.yaml \
         experiments/compare_mpnet_minilm_rt.yaml \
         experiments/tune_mpnet_minilm_bbc.yaml experiments/compare_mpnet_minilm_bbc.yaml
fi
exec .venv/bin/kdkit compare "$@" --document docs/results.md --preamble experiments/results_preamble.md

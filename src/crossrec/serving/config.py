"""The `serve:` section of a run config (`ServeConfig`): defined in `crossrec.config`, beside the
other sections, because the run config sits on a lower floor than serving; named here too, where
the service reads it."""

from crossrec.config import ServeConfig

__all__ = ["ServeConfig"]

"""streamrec's shipped defaults: ``default.toml``, the one documented place of every setting.

A package so that the defaults travel inside the wheel (read with ``importlib.resources``);
``streamrec.settings`` loads them, then an override file, then ``STREAMREC_*`` variables.
"""

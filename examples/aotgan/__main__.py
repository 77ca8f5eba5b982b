"""``python -m examples.aotgan``: the reference trainer (same as ``python -m examples.aotgan.train``)."""

from examples.aotgan.train import main

raise SystemExit(main())

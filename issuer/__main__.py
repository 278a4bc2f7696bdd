"""``python -m issuer`` = the ``issuer`` command."""

from issuer.cli import main

raise SystemExit(main())

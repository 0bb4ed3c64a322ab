"""`python -m local`: start the local emulator (options: `python -m local --help`)."""

from local.emulator import main

raise SystemExit(main())

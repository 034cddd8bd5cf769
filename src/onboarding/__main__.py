from onboarding.entrypoints.cli import main

raise SystemExit(main())

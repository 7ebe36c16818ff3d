from consumer.entrypoints.cli import main

raise SystemExit(main())

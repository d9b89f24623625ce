from scriptrun.cli import main

raise SystemExit(main())

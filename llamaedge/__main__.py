from llamaedge.cli import main

raise SystemExit(main())

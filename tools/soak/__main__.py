from tools.soak.run import main

raise SystemExit(main())

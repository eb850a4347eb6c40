from lasso.cli import main

raise SystemExit(main())

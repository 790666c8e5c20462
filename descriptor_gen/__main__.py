from descriptor_gen.cli import main

raise SystemExit(main())

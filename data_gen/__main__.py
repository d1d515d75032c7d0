import sys
from aidetect.gen.cli import main

sys.exit(main())

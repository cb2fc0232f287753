import sys

from ftcloud_train.entrypoint import main

sys.exit(main())

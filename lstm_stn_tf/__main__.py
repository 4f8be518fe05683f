import sys

from lstm_stn_tf.cli import main

sys.exit(main())

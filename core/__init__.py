"""The shared kernel: small helpers every app may import (money), importing no app."""

"""The shared kernel: what every app may import (money and MoneyField, the DRF helpers of
the management API, request-id logging); it imports no app."""

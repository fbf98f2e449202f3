"""Stage 2: model import (llama2.c -> HF) and vocabulary expansion with embedding initialisation."""

"""One ``APIRouter`` per resource; ``app.create_app`` includes them (in an order that matters)."""

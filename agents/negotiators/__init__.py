"""Market negotiators: scripted strategies and learned policies behind one interface."""

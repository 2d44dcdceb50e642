"""`atelier`: generate images, follow and cancel jobs, and run the admin API from a terminal."""

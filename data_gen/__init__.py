"""aidetect-gen: AI counterparts of real photos (image variations) as aidetect datasets."""

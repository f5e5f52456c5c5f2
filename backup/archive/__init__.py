"""Archiving: walking files and streams into trees and blobs through the repository writer."""

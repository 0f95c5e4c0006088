"""The words synthetic item texts are drawn from (data/synthetic.py, data/scale_world.py): per
category, eight topics of five words each (one topic per shared latent centroid), and nouns."""

from __future__ import annotations

# Per topic: one theme (shared latent centroid) and five words in each known category's vocabulary.
TOPIC_WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "books": (
        ("classic", "victorian", "literary", "timeless", "heritage"),
        ("science", "physics", "algorithm", "quantum", "engineering"),
        ("adventure", "expedition", "survival", "voyage", "wilderness"),
        ("children", "picture", "fairy", "bedtime", "rhyme"),
        ("wellness", "mindfulness", "yoga", "nutrition", "healing"),
        ("cookbook", "gourmet", "wine", "culinary", "feast"),
        ("mystery", "detective", "thriller", "crime", "noir"),
        ("essays", "minimalism", "philosophy", "poetry", "stoic"),
    ),
    "electronics": (
        ("retro", "vintage", "analog", "turntable", "vinyl"),
        ("smart", "wifi", "bluetooth", "wireless", "app"),
        ("rugged", "waterproof", "gps", "solar", "outdoor"),
        ("kids", "educational", "toy", "learning", "cartoon"),
        ("fitness", "tracker", "pulse", "sleep", "massage"),
        ("premium", "studio", "hifi", "audiophile", "flagship"),
        ("gaming", "rgb", "mechanical", "console", "esports"),
        ("compact", "minimalist", "slim", "recycled", "eco"),
    ),
    "kitchen": (
        ("enamel", "farmhouse", "copper", "rustic", "traditional"),
        ("digital", "programmable", "precision", "sensor", "touchscreen"),
        ("camping", "portable", "grill", "barbecue", "thermos"),
        ("lunchbox", "snack", "family", "playful", "bento"),
        ("juicer", "organic", "vegan", "smoothie", "wholefood"),
        ("chef", "artisan", "ceramic", "professional", "damascus"),
        ("matte", "black", "cast-iron", "smoked", "charcoal"),
        ("bamboo", "zero-waste", "glass", "reusable", "compostable"),
    ),
    "garden": (
        ("heirloom", "cottage", "antique", "rose", "trellis"),
        ("automatic", "irrigation", "timer", "hydroponic", "robotic"),
        ("hardy", "native", "meadow", "wildflower", "trail"),
        ("sandpit", "swing", "playhouse", "colourful", "fairy-garden"),
        ("herb", "medicinal", "lavender", "chamomile", "mint"),
        ("designer", "sculpture", "marble", "topiary", "fountain"),
        ("shade", "fern", "moss", "nocturnal", "hosta"),
        ("succulent", "cactus", "bonsai", "zen", "pebble"),
    ),
}
NOUNS: dict[str, tuple[str, ...]] = {
    "books": ("novel", "guide", "handbook", "anthology", "collection"),
    "electronics": ("headphones", "speaker", "charger", "camera", "tablet"),
    "kitchen": ("pan", "kettle", "knife", "mug", "board"),
    "garden": ("planter", "hose", "seeds", "shears", "lantern"),
}

__all__ = ["NOUNS", "TOPIC_WORDS"]
